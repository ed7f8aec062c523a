"""KV block pool and prefix cache: hits, salt isolation, LRU eviction, refcounts, integrity."""

from __future__ import annotations

import itertools

import pytest

from jongleur.engine.kv_cache import KVCacheManager, KVIntegrityError
from jongleur.engine.sequence import Sequence
from jongleur.engine.types import SamplingParams

BS = 4
_ids = itertools.count()


def make_seq(tokens: list[int], salt: str = "", max_tokens: int = 8) -> Sequence:
    return Sequence(
        seq_id=next(_ids),
        request_id=f"r{next(_ids)}",
        index=0,
        prompt_token_ids=list(tokens),
        sampling=SamplingParams(max_tokens=max_tokens),
        cache_salt=salt,
    )


def prefill(kv: KVCacheManager, seq: Sequence) -> None:
    """Allocate and 'compute' the whole prompt, as the scheduler + runner would."""
    assert kv.allocate_for(seq, seq.num_tokens - kv.lookup_prefix(seq))
    seq.num_computed_tokens = seq.num_tokens
    kv.commit_computed(seq)


def test_allocation_covers_tokens_and_free_returns_blocks() -> None:
    kv = KVCacheManager(8, BS)
    seq = make_seq(list(range(10)))
    assert kv.allocate_for(seq, 10)
    assert len(seq.block_table) == 3 and kv.num_free_blocks == 5
    assert kv.usage == pytest.approx(3 / 8)
    kv.check_integrity([seq])
    kv.free(seq)
    assert seq.block_table == [] and kv.num_free_blocks == 8
    kv.check_integrity([])


def test_allocation_fails_atomically_when_pool_is_short() -> None:
    kv = KVCacheManager(4, BS)
    a = make_seq(list(range(12)))
    assert kv.allocate_for(a, 12)
    b = make_seq(list(range(100, 108)))
    assert not kv.allocate_for(b, 8)
    assert b.block_table == [] and b.num_computed_tokens == 0 and kv.num_free_blocks == 1
    kv.check_integrity([a, b])


def test_prefix_hit_shares_full_computed_blocks() -> None:
    kv = KVCacheManager(16, BS)
    a = make_seq(list(range(10)))
    prefill(kv, a)
    b = make_seq(list(range(9)) + [99, 98])  # shares the first two full blocks (8 tokens)
    assert kv.lookup_prefix(b) == 8
    assert kv.allocate_for(b, 3)
    assert b.num_computed_tokens == 8 and b.num_cached_tokens == 8
    assert b.block_table[:2] == a.block_table[:2] and b.block_table[2] != a.block_table[2]
    assert kv.pool.blocks[a.block_table[0]].ref_count == 2
    assert kv.stats.queries == 10 + 11 and kv.stats.hits == 8
    kv.check_integrity([a, b])


def test_uncomputed_blocks_are_not_hit() -> None:
    kv = KVCacheManager(16, BS)
    a = make_seq(list(range(12)))
    assert kv.allocate_for(a, 12)  # allocated, but nothing computed or committed
    kv.commit_computed(a)
    assert kv.lookup_prefix(make_seq(list(range(12)))) == 0
    a.num_computed_tokens = 5  # one full block computed
    kv.commit_computed(a)
    assert kv.lookup_prefix(make_seq(list(range(12)))) == 4
    kv.free(a)
    kv.check_integrity([])


def test_whole_prompt_is_never_served_from_cache() -> None:
    kv = KVCacheManager(16, BS)
    prefill(kv, make_seq(list(range(8))))
    same = make_seq(list(range(8)))
    assert kv.lookup_prefix(same) == 4  # the last block is recomputed: its last token gives logits
    longer = make_seq(list(range(9)))
    assert kv.lookup_prefix(longer) == 8


def test_salt_isolates_tenants() -> None:
    kv = KVCacheManager(16, BS)
    a = make_seq(list(range(12)), salt="tenant-a")
    prefill(kv, a)
    assert kv.lookup_prefix(make_seq(list(range(12)), salt="tenant-b")) == 0
    assert kv.lookup_prefix(make_seq(list(range(12)), salt="")) == 0
    assert kv.lookup_prefix(make_seq(list(range(12)), salt="tenant-a")) == 8


def test_chained_hash_requires_identical_prefix() -> None:
    kv = KVCacheManager(16, BS)
    prefill(kv, make_seq(list(range(12))))
    # Same second block, different first block: no hit at all (the chain breaks at block 0).
    assert kv.lookup_prefix(make_seq([50, 51, 52, 53] + list(range(4, 12)))) == 0


def test_freed_cached_blocks_stay_hittable_then_evict_lru() -> None:
    kv = KVCacheManager(6, BS)
    old = make_seq(list(range(100, 109)))  # 2 full blocks + 1
    prefill(kv, old)
    kv.free(old)
    new = make_seq(list(range(200, 209)))
    prefill(kv, new)
    kv.free(new)
    assert kv.num_free_blocks == 6
    assert kv.lookup_prefix(make_seq(list(range(100, 109)))) == 8
    assert kv.lookup_prefix(make_seq(list(range(200, 209)))) == 8
    # Taking 3 blocks: the 2 hashless tail blocks go first, then the least recently freed cached
    # block, which is the last full block of "old" (a sequence's tail is released first).
    big = make_seq(list(range(300, 312)))
    assert kv.allocate_for(big, 12)
    assert kv.lookup_prefix(make_seq(list(range(100, 109)))) == 4
    assert kv.lookup_prefix(make_seq(list(range(200, 209)))) == 8  # more recently used: intact
    kv.check_integrity([big])


def test_evicts_tail_blocks_first_within_a_sequence() -> None:
    kv = KVCacheManager(4, BS)
    a = make_seq(list(range(17)))  # 4 full blocks, computed and cached
    a_tokens = list(range(17))
    assert kv.allocate_for(a, 16)
    a.num_computed_tokens = 16
    kv.commit_computed(a)
    kv.free(a)
    b = make_seq([900, 901, 902])
    assert kv.allocate_for(b, 3)  # evicts one block: a's last
    assert kv.lookup_prefix(make_seq(a_tokens)) == 12  # the first three blocks still hit
    kv.check_integrity([b])


def test_hit_revives_free_cached_block_and_counts_it_against_free_space() -> None:
    kv = KVCacheManager(3, BS)
    a = make_seq(list(range(9)))
    prefill(kv, a)
    kv.free(a)
    b = make_seq(list(range(9)))  # hits 2 cached (free) blocks, needs 1 more: exactly the pool
    assert kv.allocate_for(b, 1)
    assert b.num_computed_tokens == 8 and kv.num_free_blocks == 0
    kv.check_integrity([b])
    c = make_seq(list(range(9)))
    assert kv.allocate_for(c, 1) is False  # the 2 shared blocks are free to share, but no tail block
    assert c.block_table == [] and c.num_computed_tokens == 0
    kv.check_integrity([b, c])


def test_refcounts_with_shared_blocks() -> None:
    kv = KVCacheManager(16, BS)
    seqs = [make_seq(list(range(10))) for _ in range(4)]
    prefill(kv, seqs[0])
    for s in seqs[1:]:
        assert kv.allocate_for(s, s.num_tokens - kv.lookup_prefix(s))
    shared = seqs[0].block_table[:2]
    assert all(kv.pool.blocks[b].ref_count == 4 for b in shared)
    kv.check_integrity(seqs)
    kv.free(seqs[0])
    assert all(kv.pool.blocks[b].ref_count == 3 for b in shared)
    kv.check_integrity(seqs[1:])
    for s in seqs[1:]:
        kv.free(s)
    kv.check_integrity([])
    assert kv.num_free_blocks == 16


def test_decode_tokens_extend_the_table_and_get_cached() -> None:
    kv = KVCacheManager(16, BS)
    seq = make_seq(list(range(7)))
    prefill(kv, seq)
    for token in range(1000, 1006):
        seq.append_token(token)
        assert kv.allocate_for(seq, 1)
        seq.num_computed_tokens += 1
        kv.commit_computed(seq)
    assert seq.num_computed_tokens == 13 and len(seq.block_table) == 4
    # prompt + outputs are cached: a preempted sequence gets its 3 full blocks back on resume
    kv.free(seq)
    assert kv.lookup_prefix(seq) == 12
    kv.check_integrity([])


def test_duplicate_content_computed_twice_stays_private() -> None:
    kv = KVCacheManager(16, BS)
    a, b = make_seq(list(range(9))), make_seq(list(range(9)))
    assert kv.allocate_for(a, 9) and kv.allocate_for(b, 9)  # neither hits: nothing committed yet
    for s in (a, b):
        s.num_computed_tokens = 9
        kv.commit_computed(s)
    assert set(a.block_table).isdisjoint(b.block_table)
    kv.check_integrity([a, b])
    kv.free(a)
    kv.free(b)
    kv.check_integrity([])


def test_prefix_caching_disabled() -> None:
    kv = KVCacheManager(16, BS, enable_prefix_caching=False)
    a = make_seq(list(range(12)))
    prefill(kv, a)
    b = make_seq(list(range(12)))
    assert kv.lookup_prefix(b) == 0
    assert kv.allocate_for(b, 12) and b.num_computed_tokens == 0
    assert kv.stats.queries == 0
    kv.check_integrity([a, b])


def test_reset_prefix_cache_drops_unowned_entries() -> None:
    kv = KVCacheManager(16, BS)
    a = make_seq(list(range(12)))
    prefill(kv, a)
    held = make_seq(list(range(50, 62)))
    prefill(kv, held)
    kv.free(a)
    assert kv.reset_prefix_cache() == 3
    assert kv.lookup_prefix(make_seq(list(range(12)))) == 0
    assert kv.lookup_prefix(make_seq(list(range(50, 62)))) == 8  # still held: still cached
    kv.check_integrity([held])


def test_integrity_detects_leaks_and_bad_refcounts() -> None:
    kv = KVCacheManager(8, BS)
    a = make_seq(list(range(8)))
    assert kv.allocate_for(a, 8)
    with pytest.raises(KVIntegrityError):
        kv.check_integrity([])  # a's blocks leak if a is not live
    kv.pool.blocks[a.block_table[0]].ref_count += 1
    with pytest.raises(KVIntegrityError):
        kv.check_integrity([a])
    kv.pool.blocks[a.block_table[0]].ref_count -= 1
    kv.check_integrity([a])
    b = make_seq(list(range(8)))
    b.block_table = [a.block_table[1]]  # unhashed block owned twice
    kv.pool.blocks[a.block_table[1]].ref_count += 1
    with pytest.raises(KVIntegrityError):
        kv.check_integrity([a, b])


def test_sequence_token_views() -> None:
    from jongleur.engine.sequence import SequenceStatus, sequences_from_request
    from jongleur.engine.types import EngineRequest

    seq = make_seq([1, 2, 3])
    outputs = seq.output_token_ids
    seq.append_token(4)
    seq.append_token(5)
    assert seq.output_token_ids is outputs  # appended in place
    assert seq.all_token_ids == [1, 2, 3, 4, 5] and seq.num_tokens == 5 and seq.num_prompt_tokens == 3
    for start, stop in [(0, 2), (0, 5), (1, 4), (3, 5), (4, 5), (2, 3)]:
        assert seq.token_range(start, stop) == seq.all_token_ids[start:stop]
    assert seq.num_pending_tokens == 5 and not seq.is_finished and not seq.is_preempted
    request = EngineRequest("r", [7, 8], SamplingParams(n=3), tenant="t", cache_salt="s")
    seqs = sequences_from_request(request)
    assert [s.index for s in seqs] == [0, 1, 2] and len({s.seq_id for s in seqs}) == 3
    assert all(s.status is SequenceStatus.WAITING and s.cache_salt == "s" for s in seqs)
    assert seqs[0].prompt_token_ids is not seqs[1].prompt_token_ids
