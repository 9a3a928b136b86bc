"""Event ids made as text are the canonical texts of version 7 UUIDs, in one sequence with
the UUID objects."""

from __future__ import annotations

import uuid

from sqla_audit.events import new_event_id_texts, new_event_ids


def test_id_texts_are_canonical_increasing_version_7_uuids() -> None:
    """new_event_id_texts gives str(UUID) texts of v7 ids, increasing across both makers."""
    before = new_event_ids(2)
    texts = new_event_id_texts(2500)
    after = new_event_ids(1)
    assert new_event_id_texts(0) == []
    ids = [uuid.UUID(text) for text in texts]
    assert [str(i) for i in ids] == texts
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    sequence = [*before, *ids, *after]
    assert sequence == sorted(sequence)
    assert len(set(sequence)) == len(sequence)
