"""The KV block pool: reference counts, a free list, prefix caching, copy-on-write.

Pure Python policy; the model runner owns the tensors these block ids index.

Prefix caching: once a block is full, its key is a hash chained over the previous block's
prefix id and this block's token ids. A hit is verified against both the stored token ids
and the stored parent prefix id, so it is exact: a hash collision can never serve K/V that
was computed after another prefix. A freed block keeps its key and stays findable until
the free list hands it out again (least recently freed first).

Copy-on-write: parallel samples of one prompt share its blocks; the first write into a
shared, partly filled block gets the writer its own copy (the runner copies the K/V).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

BlockCopy = tuple[int, int]  # (source block, destination block)


@dataclass
class Block:
    block_id: int
    ref_count: int = 0
    key: int | None = None  # prefix-cache key once full and registered
    token_ids: tuple[int, ...] = ()  # the tokens behind `key`, to verify hits
    parent: int = -1  # prefix id of the block before it (-1: first block), to verify hits
    prefix_id: int = -1  # unique id of the prefix ending here, while registered


_NO_PARENT = -1


@dataclass
class RegisterProgress:
    """How many of a sequence's leading blocks register_full_blocks has looked at, and the
    prefix they end in. Reset when the sequence's blocks are freed."""

    blocks: int = 0
    parent: int = _NO_PARENT


class NoFreeBlocks(Exception):
    """Raised inside the manager when a request needs more blocks than are free."""


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        if num_blocks <= 0:
            raise ValueError(f"num_blocks must be positive, got {num_blocks}")
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self.cached: dict[int, int] = {}  # key -> block id
        self._prefix_ids = itertools.count()

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free_blocks(self) -> int:
        """Blocks with no owner (some still hold cached prefixes and may be revived)."""
        return len(self.free)

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    # ---- prefix cache --------------------------------------------------------------------

    def block_key(self, parent: int, token_ids: Sequence[int]) -> int:
        return hash((parent, tuple(token_ids)))

    def _lookup(self, parent: int, chunk: tuple[int, ...]) -> Block | None:
        """The registered block holding `chunk` right after prefix `parent`, verified."""
        block_id = self.cached.get(self.block_key(parent, chunk))
        if block_id is None:
            return None
        block = self.blocks[block_id]
        return block if block.token_ids == chunk and block.parent == parent else None

    def find_cached_prefix(self, token_ids: Sequence[int]) -> list[int]:
        """Blocks already holding the longest run of full leading blocks of `token_ids`."""
        if not self.enable_prefix_caching:
            return []
        found: list[int] = []
        parent = _NO_PARENT
        bs = self.block_size
        for start in range(0, len(token_ids) - bs + 1, bs):
            block = self._lookup(parent, tuple(token_ids[start : start + bs]))
            if block is None:
                break
            found.append(block.block_id)
            parent = block.prefix_id
        return found

    def register_full_blocks(self, table: list[int], token_ids: Sequence[int], num_computed: int,
                             progress: RegisterProgress | None = None) -> None:
        """Make every full, computed block of a sequence findable by later requests.

        With `progress` (kept per sequence), blocks looked at before are skipped: a decode
        step then costs one block at most, not a walk over the whole sequence.
        """
        if not self.enable_prefix_caching:
            return
        progress = progress if progress is not None else RegisterProgress()
        parent = progress.parent
        bs = self.block_size
        for i in range(progress.blocks, num_computed // bs):
            block = self.blocks[table[i]]
            if block.key is not None:
                parent = block.prefix_id
            else:
                chunk = tuple(token_ids[i * bs : (i + 1) * bs])
                key = self.block_key(parent, chunk)
                if key in self.cached:
                    twin = self._lookup(parent, chunk)
                    if twin is None:
                        return  # a colliding key holds other content: stop registering here
                    parent = twin.prefix_id  # the same prefix is cached in another block
                else:
                    block.key, block.token_ids, block.parent = key, chunk, parent
                    block.prefix_id = next(self._prefix_ids)
                    self.cached[key] = block.block_id
                    parent = block.prefix_id
            progress.blocks, progress.parent = i + 1, parent

    # ---- allocation ----------------------------------------------------------------------

    def take(self, block_ids: Sequence[int]) -> None:
        """Add an owner to each block (cache hits and forks)."""
        for block_id in block_ids:
            block = self.blocks[block_id]
            if block.ref_count == 0:
                del self.free[block_id]
            block.ref_count += 1

    def _pop_free(self) -> int:
        block_id, _ = self.free.popitem(last=False)
        block = self.blocks[block_id]
        if block.key is not None:  # evict the cached prefix it held
            del self.cached[block.key]
            block.key, block.token_ids = None, ()
            block.parent = block.prefix_id = _NO_PARENT
        block.ref_count = 1
        return block_id

    def slots_needed(self, table: list[int], num_computed: int, num_new: int) -> int:
        """Fresh blocks that `allocate_slots` would take for these new tokens."""
        if num_new <= 0:
            return 0
        grow = max(0, self.blocks_for(num_computed + num_new) - len(table))
        first = num_computed // self.block_size
        cow = first < len(table) and self.blocks[table[first]].ref_count > 1
        return grow + int(cow)

    def allocate_slots(self, table: list[int], num_computed: int, num_new: int) -> list[BlockCopy]:
        """Grow `table` so positions [num_computed, num_computed + num_new) have slots.

        Returns the block copies the runner must do first (copy-on-write). Raises
        NoFreeBlocks, changing nothing, when the pool cannot supply the blocks.
        """
        if self.slots_needed(table, num_computed, num_new) > len(self.free):
            raise NoFreeBlocks
        copies: list[BlockCopy] = []
        first = num_computed // self.block_size
        if num_new > 0 and first < len(table) and self.blocks[table[first]].ref_count > 1:
            shared = table[first]
            self.blocks[shared].ref_count -= 1
            table[first] = self._pop_free()
            copies.append((shared, table[first]))
        while len(table) < self.blocks_for(num_computed + num_new):
            table.append(self._pop_free())
        return copies

    def fork(self, table: list[int]) -> list[int]:
        """A second owner of every block of `table` (a parallel sample of the same prompt)."""
        self.take(table)
        return list(table)

    def truncate(self, table: list[int], num_tokens: int) -> None:
        """Give back the blocks of `table` past those `num_tokens` positions need (blocks
        that only held rejected draft tokens). They were never full of computed tokens, so
        they were never offered to the prefix cache."""
        keep = self.blocks_for(num_tokens)
        if len(table) > keep:
            tail = table[keep:]
            del table[keep:]
            self.free_table(tail)

    def free_table(self, table: list[int]) -> None:
        """Drop one owner from each block; last blocks first so prefixes are evicted last."""
        for block_id in reversed(table):
            block = self.blocks[block_id]
            if block.ref_count <= 0:
                raise RuntimeError(f"block {block_id} freed twice")
            block.ref_count -= 1
            if block.ref_count == 0:
                self.free[block_id] = None
        table.clear()

    def check_invariants(self, live_tables: Sequence[Sequence[int]]) -> None:
        """Every block is owned exactly as often as live tables name it; free iff unowned."""
        owners = [0] * self.num_blocks
        for table in live_tables:
            for block_id in table:
                owners[block_id] += 1
        for block in self.blocks:
            if block.ref_count != owners[block.block_id]:
                raise AssertionError(f"block {block.block_id}: ref {block.ref_count} != {owners[block.block_id]}")
            if (block.ref_count == 0) != (block.block_id in self.free):
                raise AssertionError(f"block {block.block_id}: free list disagrees with ref count")
        for key, block_id in self.cached.items():
            if self.blocks[block_id].key != key:
                raise AssertionError(f"cache entry {key} points at block {block_id} with another key")
