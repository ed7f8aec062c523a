"""The KV block pool, per-sequence block tables and the hash-chained prefix cache.

Rules this module keeps (and `check_integrity` verifies):

- every block has a reference count equal to the number of live block tables holding it;
- a block with refcount 0 is in the free queue, and only those are; the free queue is LRU
  ordered: blocks without a hash at the front (reused first), freed cached blocks at the back,
  so the least recently used cached block is evicted first;
- a block is registered in the prefix cache (has a hash) only once it is full and its KV is
  computed; only such blocks can be shared, so no two sequences ever write to the same block;
- the hash of block i chains the hash of block i-1 and the block's tokens; the chain starts
  from the sequence's cache salt, so a salt's entries are never hit by another salt.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from jongleur.engine.sequence import Sequence


class KVIntegrityError(AssertionError):
    """A block is leaked, double-owned or has a wrong reference count (a bug, not bad input)."""


@dataclass
class PrefixCacheStats:
    queries: int = 0  # tokens looked up at first allocation of a sequence
    hits: int = 0  # of which served from the cache


@dataclass
class _Block:
    block_id: int
    ref_count: int = 0
    block_hash: bytes | None = None


def _root_hash(salt: str) -> bytes:
    return hashlib.blake2b(
        b"jongleur-kv\x00" + salt.encode("utf-8", "surrogatepass"), digest_size=16
    ).digest()


def _chain_hash(parent: bytes, tokens: list[int]) -> bytes:
    return hashlib.blake2b(parent + array("q", tokens).tobytes(), digest_size=16).digest()


class BlockPool:
    """`num_blocks` blocks with reference counts, an LRU free queue and a hash -> block map."""

    def __init__(self, num_blocks: int) -> None:
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be positive, got {num_blocks}")
        self.blocks = [_Block(i) for i in range(num_blocks)]
        self.free_queue: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self.cached: dict[bytes, int] = {}

    @property
    def num_free(self) -> int:
        return len(self.free_queue)

    def allocate(self) -> int:
        """Take the least recently used free block, evicting its cache entry if it has one."""
        block_id, _ = self.free_queue.popitem(last=False)
        block = self.blocks[block_id]
        if block.block_hash is not None:
            del self.cached[block.block_hash]
            block.block_hash = None
        block.ref_count = 1
        return block_id

    def touch(self, block_id: int) -> None:
        """Take one more reference to a (cached) block, reviving it if it was free."""
        block = self.blocks[block_id]
        if block.ref_count == 0:
            del self.free_queue[block_id]
        block.ref_count += 1

    def release(self, block_id: int) -> None:
        block = self.blocks[block_id]
        block.ref_count -= 1
        if block.ref_count == 0:
            self.free_queue[block_id] = None
            if block.block_hash is None:
                self.free_queue.move_to_end(block_id, last=False)

    def register(self, block_id: int, block_hash: bytes) -> bool:
        """Make a full, computed block hittable. False if another block already holds that content."""
        block = self.blocks[block_id]
        if block.block_hash is not None:
            return block.block_hash == block_hash
        if block_hash in self.cached:
            return False
        block.block_hash = block_hash
        self.cached[block_hash] = block_id
        return True


class KVCacheManager:
    """Hands out blocks to sequences (their `block_table`) and serves prompt prefixes from cache."""

    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be positive, got {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.pool = BlockPool(num_blocks)
        self.stats = PrefixCacheStats()
        # seq_id -> how many leading blocks of its table are registered (or found) in the cache.
        self._num_committed: dict[int, int] = {}

    # ---- sizes ----------------------------------------------------------------------------
    @property
    def num_free_blocks(self) -> int:
        """Blocks with no owner (including evictable cached ones)."""
        return self.pool.num_free

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - self.pool.num_free

    @property
    def usage(self) -> float:
        return self.num_used_blocks / self.num_blocks

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    # ---- prefix cache ---------------------------------------------------------------------
    def _hashes(self, seq: Sequence, num_blocks: int) -> list[bytes]:
        """The first `num_blocks` chained hashes of the sequence's full blocks (computed lazily)."""
        hashes = seq.block_hashes
        bs = self.block_size
        while len(hashes) < num_blocks:
            i = len(hashes)
            parent = hashes[-1] if hashes else _root_hash(seq.cache_salt)
            hashes.append(_chain_hash(parent, seq.token_range(i * bs, (i + 1) * bs)))
        return hashes[:num_blocks]

    def _find_cached_blocks(self, seq: Sequence) -> list[int]:
        if not self.enable_prefix_caching:
            return []
        # Never the whole sequence: its last token must be computed to give logits to sample from.
        max_blocks = (seq.num_tokens - 1) // self.block_size
        found: list[int] = []
        for block_hash in self._hashes(seq, max_blocks):
            block_id = self.pool.cached.get(block_hash)
            if block_id is None:
                break
            found.append(block_id)
        return found

    def lookup_prefix(self, seq: Sequence) -> int:
        """Tokens of a sequence without blocks that the prefix cache would serve now (no side effect)."""
        if seq.block_table:
            return seq.num_computed_tokens
        return len(self._find_cached_blocks(seq)) * self.block_size

    # ---- allocation -----------------------------------------------------------------------
    def allocate_for(self, seq: Sequence, num_new_tokens: int) -> bool:
        """Make `seq.block_table` cover `num_computed_tokens + num_new_tokens` tokens.

        On a sequence's first allocation (no blocks yet) the prefix cache is looked up first and
        `num_computed_tokens` set to the cached length; `num_new_tokens` then counts from there.
        Returns False, changing nothing, if there are not enough free blocks.
        """
        first = not seq.block_table
        hits = self._find_cached_blocks(seq) if first else []
        computed = len(hits) * self.block_size if first else seq.num_computed_tokens
        needed = self.blocks_needed(computed + num_new_tokens) - len(seq.block_table) - len(hits)
        revived = sum(1 for b in hits if self.pool.blocks[b].ref_count == 0)
        if max(needed, 0) + revived > self.pool.num_free:
            return False
        # Take the hits before allocating, so allocation cannot evict them.
        for block_id in hits:
            self.pool.touch(block_id)
        seq.block_table.extend(hits)
        for _ in range(needed):
            seq.block_table.append(self.pool.allocate())
        if first:
            seq.num_computed_tokens = computed
            self._num_committed[seq.seq_id] = len(hits)
            if self.enable_prefix_caching:
                self.stats.queries += seq.num_tokens
                self.stats.hits += computed
            if seq.num_preemptions == 0:
                seq.num_cached_tokens = min(computed, seq.num_prompt_tokens)
        return True

    def commit_computed(self, seq: Sequence) -> None:
        """Register the sequence's newly full, computed blocks in the prefix cache."""
        if not self.enable_prefix_caching or not seq.block_table:
            return
        start = self._num_committed.get(seq.seq_id, 0)
        full = min(seq.num_computed_tokens // self.block_size, len(seq.block_table))
        if full <= start:
            return
        hashes = self._hashes(seq, full)
        for i in range(start, full):
            # A duplicate (another sequence computed the same block at the same time) stays private.
            self.pool.register(seq.block_table[i], hashes[i])
        self._num_committed[seq.seq_id] = full

    def free(self, seq: Sequence) -> None:
        """Release the sequence's blocks; cached ones stay hittable until evicted (LRU)."""
        # Release the tail first: it is the least likely to be shared, so it is evicted first.
        for block_id in reversed(seq.block_table):
            self.pool.release(block_id)
        seq.block_table = []
        seq.num_computed_tokens = 0
        self._num_committed.pop(seq.seq_id, None)

    def reset_prefix_cache(self) -> int:
        """Forget every cached block that no sequence holds (e.g. after a weight swap). Returns how many."""
        dropped = 0
        for block_id in list(self.pool.free_queue):
            block = self.pool.blocks[block_id]
            if block.block_hash is not None:
                del self.pool.cached[block.block_hash]
                block.block_hash = None
                self.pool.free_queue.move_to_end(block_id, last=False)
                dropped += 1
        return dropped

    # ---- checks ---------------------------------------------------------------------------
    def check_integrity(self, live_seqs: Iterable[Sequence]) -> None:
        """Raise `KVIntegrityError` unless the pool's state matches exactly these sequences' tables."""
        pool = self.pool
        expected = [0] * self.num_blocks
        owners: dict[int, int] = {}
        live_ids: set[int] = set()
        for seq in live_seqs:
            live_ids.add(seq.seq_id)
            table = seq.block_table
            if len(set(table)) != len(table):
                raise KVIntegrityError(f"sequence {seq.seq_id} holds a block twice: {table}")
            if len(table) < self.blocks_needed(seq.num_computed_tokens):
                raise KVIntegrityError(
                    f"sequence {seq.seq_id} has {seq.num_computed_tokens} computed tokens but {len(table)} blocks"
                )
            for i, block_id in enumerate(table):
                if not 0 <= block_id < self.num_blocks:
                    raise KVIntegrityError(f"sequence {seq.seq_id} holds block id {block_id} out of range")
                expected[block_id] += 1
                block = pool.blocks[block_id]
                if block_id in owners and block.block_hash is None:
                    raise KVIntegrityError(
                        f"block {block_id} is owned by sequences {owners[block_id]} and {seq.seq_id} "
                        "but is not a cached (shareable) block"
                    )
                owners[block_id] = seq.seq_id
                hashes = seq.block_hashes
                if block.block_hash is not None and i < len(hashes) and hashes[i] != block.block_hash:
                    raise KVIntegrityError(f"block {block_id} of sequence {seq.seq_id} holds other tokens")
        for block in pool.blocks:
            if block.ref_count != expected[block.block_id]:
                raise KVIntegrityError(
                    f"block {block.block_id} has refcount {block.ref_count}, "
                    f"but {expected[block.block_id]} live sequences hold it"
                )
            if (block.ref_count == 0) != (block.block_id in pool.free_queue):
                raise KVIntegrityError(
                    f"block {block.block_id} (refcount {block.ref_count}) misfiled in free queue"
                )
            if block.block_hash is not None and pool.cached.get(block.block_hash) != block.block_id:
                raise KVIntegrityError(f"block {block.block_id} has a hash the cache does not map to it")
        if len(pool.free_queue) + sum(1 for b in pool.blocks if b.ref_count > 0) != self.num_blocks:
            raise KVIntegrityError("the free queue holds unknown block ids")
        for block_hash, block_id in pool.cached.items():
            if pool.blocks[block_id].block_hash != block_hash:
                raise KVIntegrityError(f"cache entry points to block {block_id}, which holds another hash")
        stale = set(self._num_committed) - live_ids
        if stale:
            raise KVIntegrityError(f"bookkeeping kept for sequences that are not live: {sorted(stale)}")
