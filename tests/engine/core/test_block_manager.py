"""The KV block pool: ref counts, the free list, prefix caching and copy-on-write (no model)."""

from __future__ import annotations

import pytest

from engine.core.block_manager import BlockManager, NoFreeBlocks


def snapshot(bm: BlockManager) -> tuple:
    """Everything observable about the pool, to check that a failed call changed nothing."""
    return (
        [(b.block_id, b.ref_count, b.key, b.token_ids) for b in bm.blocks],
        list(bm.free),
        dict(bm.cached),
    )


def allocated(bm: BlockManager, num_tokens: int) -> list[int]:
    table: list[int] = []
    assert bm.allocate_slots(table, 0, num_tokens) == []
    return table


def computed(bm: BlockManager, tokens: list[int]) -> list[int]:
    """A table whose tokens are all computed and whose full blocks are registered."""
    table = allocated(bm, len(tokens))
    bm.register_full_blocks(table, tokens, len(tokens))
    return table


# ---- construction and sizes -----------------------------------------------------------------


@pytest.mark.parametrize("num_blocks", [0, -3])
def test_rejects_non_positive_pool(num_blocks):
    with pytest.raises(ValueError, match="num_blocks must be positive"):
        BlockManager(num_blocks, 4)


def test_new_pool_is_all_free():
    bm = BlockManager(5, 4)
    assert bm.num_blocks == 5
    assert bm.num_free_blocks == 5
    assert list(bm.free) == [0, 1, 2, 3, 4]
    assert bm.cached == {}
    bm.check_invariants([])


@pytest.mark.parametrize(
    ("num_tokens", "blocks"), [(0, 0), (1, 1), (3, 1), (4, 1), (5, 2), (8, 2), (9, 3)]
)
def test_blocks_for_rounds_up(num_tokens, blocks):
    assert BlockManager(4, 4).blocks_for(num_tokens) == blocks


# ---- allocation, ref counts, freeing -----------------------------------------------------------


def test_allocate_grows_table_only_when_needed():
    bm = BlockManager(8, 4)
    table: list[int] = []
    assert bm.allocate_slots(table, 0, 10) == []
    assert table == [0, 1, 2]  # least recently freed first: initially in id order
    assert bm.num_free_blocks == 5
    assert [bm.blocks[b].ref_count for b in table] == [1, 1, 1]

    assert bm.allocate_slots(table, 10, 2) == []  # positions 10, 11 still fit block 2
    assert table == [0, 1, 2]
    assert bm.allocate_slots(table, 12, 1) == []  # position 12 opens block 3
    assert table == [0, 1, 2, 3]
    assert bm.num_free_blocks == 4
    bm.check_invariants([table])


def test_allocate_zero_new_tokens_changes_nothing():
    bm = BlockManager(4, 4)
    table = allocated(bm, 4)
    before = snapshot(bm)
    assert bm.slots_needed(table, 4, 0) == 0
    assert bm.allocate_slots(table, 4, 0) == []
    assert table == [0]
    assert snapshot(bm) == before


@pytest.mark.parametrize(
    ("num_computed", "num_new", "have", "needed"),
    [(0, 1, 0, 1), (0, 4, 0, 1), (0, 5, 0, 2), (3, 1, 1, 0), (4, 1, 1, 1), (6, 7, 2, 2), (8, 0, 2, 0)],
)
def test_slots_needed_matches_what_allocate_takes(num_computed, num_new, have, needed):
    bm = BlockManager(8, 4)
    table = allocated(bm, num_computed)
    assert len(table) == have
    assert bm.slots_needed(table, num_computed, num_new) == needed
    free_before = bm.num_free_blocks
    bm.allocate_slots(table, num_computed, num_new)
    assert free_before - bm.num_free_blocks == needed
    assert len(table) == bm.blocks_for(num_computed + num_new)


def test_free_table_returns_blocks_and_clears_table():
    bm = BlockManager(6, 2)
    table = allocated(bm, 5)
    assert bm.num_free_blocks == 3
    bm.free_table(table)
    assert table == []
    assert bm.num_free_blocks == 6
    assert all(b.ref_count == 0 for b in bm.blocks)
    bm.check_invariants([])


def test_double_free_is_detected():
    bm = BlockManager(4, 2)
    table = allocated(bm, 3)
    alias = list(table)
    bm.free_table(table)
    with pytest.raises(RuntimeError, match="freed twice"):
        bm.free_table(alias)
    assert bm.num_free_blocks == 4


def test_free_list_hands_out_least_recently_freed_and_last_blocks_first():
    bm = BlockManager(6, 2)
    a = allocated(bm, 4)  # blocks 0, 1
    b = allocated(bm, 4)  # blocks 2, 3
    assert (a, b) == ([0, 1], [2, 3])
    bm.free_table(b)  # freed last block first: 3 then 2
    bm.free_table(a)  # then 1, 0
    assert list(bm.free) == [4, 5, 3, 2, 1, 0]
    assert allocated(bm, 6) == [4, 5, 3]


def test_fork_and_take_add_owners():
    bm = BlockManager(6, 4)
    parent = allocated(bm, 6)
    child = bm.fork(parent)
    assert child == parent and child is not parent
    assert [bm.blocks[b].ref_count for b in parent] == [2, 2]
    assert bm.num_free_blocks == 4  # forking takes no new blocks
    bm.check_invariants([parent, child])

    bm.free_table(parent)
    assert [bm.blocks[b].ref_count for b in child] == [1, 1]
    assert bm.num_free_blocks == 4  # still owned by the child
    bm.check_invariants([child])
    bm.free_table(child)
    assert bm.num_free_blocks == 6
    bm.check_invariants([])


def test_take_revives_a_free_block():
    bm = BlockManager(4, 4)
    table = allocated(bm, 4)
    block = table[0]
    bm.free_table(table)
    assert block in bm.free
    bm.take([block])
    assert block not in bm.free
    assert bm.blocks[block].ref_count == 1
    bm.check_invariants([[block]])


def test_no_free_blocks_on_growth_changes_nothing():
    bm = BlockManager(3, 4)
    a = computed(bm, list(range(8)))  # 2 blocks, both registered
    b = allocated(bm, 4)  # the last free block
    bm.free_table(a)  # a's blocks are free but still cached
    b_table = list(b)
    before = snapshot(bm)
    with pytest.raises(NoFreeBlocks):
        bm.allocate_slots(b, 4, 9)  # needs 3 more blocks, 2 free
    assert b == b_table
    assert snapshot(bm) == before
    assert bm.find_cached_prefix(list(range(8))) == [0, 1]  # the cache was not evicted


def test_no_free_blocks_on_copy_on_write_changes_nothing():
    bm = BlockManager(2, 4)
    parent = allocated(bm, 6)  # both blocks, the second partly filled
    child = bm.fork(parent)
    before = snapshot(bm)
    assert bm.slots_needed(child, 6, 1) == 1  # only the copy
    with pytest.raises(NoFreeBlocks):
        bm.allocate_slots(child, 6, 1)
    assert child == parent == [0, 1]
    assert snapshot(bm) == before
    bm.check_invariants([parent, child])


def test_no_free_blocks_when_copy_plus_growth_do_not_fit():
    bm = BlockManager(3, 4)
    parent = allocated(bm, 6)
    child = bm.fork(parent)
    assert bm.slots_needed(child, 6, 5) == 2  # one copy, one new block for positions 8..10
    before = snapshot(bm)
    with pytest.raises(NoFreeBlocks):
        bm.allocate_slots(child, 6, 5)
    assert snapshot(bm) == before
    assert child == [0, 1]


# ---- prefix caching ------------------------------------------------------------------------


def test_only_full_computed_blocks_are_registered():
    bm = BlockManager(8, 4)
    tokens = list(range(10, 21))  # 11 tokens: two full blocks and a partial one
    table = allocated(bm, len(tokens))
    bm.register_full_blocks(table, tokens, 7)  # only block 0 is full *and* computed
    assert bm.blocks[table[0]].key is not None
    assert bm.blocks[table[0]].token_ids == tuple(tokens[:4])
    assert bm.blocks[table[1]].key is None
    assert len(bm.cached) == 1

    bm.register_full_blocks(table, tokens, 11)
    assert bm.blocks[table[1]].token_ids == tuple(tokens[4:8])
    assert bm.blocks[table[2]].key is None  # partly filled blocks are never registered
    assert len(bm.cached) == 2
    bm.check_invariants([table])


def test_registering_twice_is_idempotent():
    bm = BlockManager(8, 4)
    tokens = list(range(8))
    table = computed(bm, tokens)
    before = snapshot(bm)
    bm.register_full_blocks(table, tokens, 8)
    assert snapshot(bm) == before


def test_lookup_serves_full_blocks_only():
    bm = BlockManager(8, 4)
    tokens = list(range(100, 110))
    table = computed(bm, tokens)
    assert bm.find_cached_prefix(tokens) == table[:2]
    assert bm.find_cached_prefix(tokens[:8]) == table[:2]
    assert bm.find_cached_prefix(tokens[:7]) == table[:1]
    assert bm.find_cached_prefix(tokens[:3]) == []  # less than a block: nothing to serve
    assert bm.find_cached_prefix(tokens + [1, 2, 3]) == table[:2]
    assert bm.find_cached_prefix([]) == []


def test_lookup_does_not_change_ownership():
    bm = BlockManager(8, 4)
    tokens = list(range(8))
    table = computed(bm, tokens)
    bm.free_table(table)
    before = snapshot(bm)
    assert bm.find_cached_prefix(tokens) == [0, 1]
    assert snapshot(bm) == before


def test_a_hit_needs_identical_earlier_blocks():
    bm = BlockManager(8, 2)
    a, b, c = [1, 2], [3, 4], [5, 6]
    table = computed(bm, a + b + c)
    assert bm.find_cached_prefix(b + c) == []  # b and c are cached, but behind a different prefix
    assert bm.find_cached_prefix(c + a) == []
    assert bm.find_cached_prefix(a + c) == table[:1]
    assert bm.find_cached_prefix(a + [9, 9] + c) == table[:1]  # stops at the first difference
    assert bm.find_cached_prefix(a + b + [9, 9]) == table[:2]


def test_same_tokens_behind_different_prefixes_get_different_blocks():
    bm = BlockManager(8, 2)
    t1 = computed(bm, [1, 2, 7, 7])
    t2 = computed(bm, [3, 4, 7, 7])
    assert len(bm.cached) == 4  # [7, 7] is cached twice, once per prefix
    assert bm.find_cached_prefix([1, 2, 7, 7]) == t1
    assert bm.find_cached_prefix([3, 4, 7, 7]) == t2
    assert t1[1] != t2[1]


class ConstantKeyManager(BlockManager):
    """Every block key collides: only the stored token ids tell blocks apart."""

    def block_key(self, prev_key, token_ids):
        return 42


def test_colliding_key_with_other_tokens_is_never_served():
    bm = ConstantKeyManager(8, 2)
    first = computed(bm, [1, 2])
    assert bm.cached == {42: first[0]}
    assert bm.find_cached_prefix([3, 4]) == []  # same key, other tokens: a miss
    assert bm.find_cached_prefix([1, 2]) == first

    second = computed(bm, [3, 4])  # the key is taken: the second block stays unregistered
    assert bm.blocks[second[0]].key is None
    assert bm.cached == {42: first[0]}
    bm.check_invariants([first, second])


class PrefixBlindKeyManager(BlockManager):
    """A key that collides whenever two blocks hold the same tokens, whatever precedes them."""

    def block_key(self, prev_key, token_ids):
        return hash(tuple(token_ids))


def test_colliding_key_behind_another_prefix_is_never_served():
    bm = PrefixBlindKeyManager(8, 2)
    computed(bm, [1, 2, 7, 7])  # [7, 7] computed after [1, 2]
    other = computed(bm, [3, 4, 5, 5])  # makes [3, 4] a cached first block
    # [7, 7] after [3, 4] has never been computed: only the first block may be served.
    assert bm.find_cached_prefix([3, 4, 7, 7]) == other[:1]


def test_prefix_caching_disabled_never_caches():
    bm = BlockManager(8, 2, enable_prefix_caching=False)
    tokens = [1, 2, 3, 4]
    table = computed(bm, tokens)
    assert bm.cached == {}
    assert all(bm.blocks[b].key is None for b in table)
    assert bm.find_cached_prefix(tokens) == []


def test_freed_blocks_stay_cached_until_reused():
    bm = BlockManager(4, 2)
    tokens = [1, 2, 3, 4]
    table = computed(bm, tokens)
    bm.free_table(table)
    assert bm.num_free_blocks == 4
    assert bm.find_cached_prefix(tokens) == [0, 1]
    bm.take([0, 1])  # revived by a hit, no recompute
    assert bm.num_free_blocks == 2
    assert bm.blocks[0].key is not None and bm.blocks[1].key is not None
    bm.check_invariants([[0, 1]])


def test_eviction_removes_the_cache_entry():
    bm = BlockManager(4, 2)
    tokens = [1, 2, 3, 4]
    table = computed(bm, tokens)
    bm.free_table(table)  # free order now: 2, 3, 1, 0
    evicted_key = bm.blocks[1].key
    assert allocated(bm, 4) == [2, 3]  # never-cached blocks go first: nothing evicted
    assert bm.find_cached_prefix(tokens) == [0, 1]
    assert allocated(bm, 2) == [1]  # the deeper block of the prefix is evicted first
    assert evicted_key not in bm.cached
    assert bm.blocks[1].key is None and bm.blocks[1].token_ids == ()
    assert bm.find_cached_prefix(tokens) == [0]  # the first block is still served
    assert allocated(bm, 2) == [0]
    assert bm.cached == {}
    assert bm.find_cached_prefix(tokens) == []


def test_reused_block_can_be_registered_with_new_tokens():
    bm = BlockManager(1, 2)
    table = computed(bm, [1, 2])
    bm.free_table(table)
    table = computed(bm, [5, 6])  # pops block 0 again, evicting [1, 2]
    assert table == [0]
    assert bm.find_cached_prefix([1, 2]) == []
    assert bm.find_cached_prefix([5, 6]) == [0]
    bm.check_invariants([table])


def test_independently_computed_duplicate_registers_after_first_is_evicted():
    bm = BlockManager(3, 2)
    first = computed(bm, [1, 2])
    second = computed(bm, [1, 2])  # the same prefix computed twice (admitted in one step)
    assert bm.cached == {bm.blocks[first[0]].key: first[0]}
    assert bm.blocks[second[0]].key is None
    bm.free_table(first)
    allocated(bm, 4)  # pops the never-used block, then evicts first's block
    assert bm.find_cached_prefix([1, 2]) == []
    bm.register_full_blocks(second, [1, 2], 2)
    assert bm.find_cached_prefix([1, 2]) == second


# ---- copy-on-write -------------------------------------------------------------------------


def test_write_into_shared_partial_block_copies_it():
    bm = BlockManager(6, 4)
    parent = allocated(bm, 6)  # block 1 holds positions 4, 5 of 8
    child = bm.fork(parent)
    shared = parent[1]

    copies = bm.allocate_slots(child, 6, 1)
    assert len(copies) == 1
    src, dst = copies[0]
    assert src == shared and dst not in parent
    assert child == [parent[0], dst]
    assert bm.blocks[shared].ref_count == 1  # the parent owns it alone now
    assert bm.blocks[dst].ref_count == 1
    assert bm.blocks[parent[0]].ref_count == 2  # the full first block stays shared
    bm.check_invariants([parent, child])

    assert bm.allocate_slots(parent, 6, 1) == []  # sole owner: writes in place
    assert parent[1] == shared
    bm.check_invariants([parent, child])


def test_write_after_shared_full_blocks_needs_no_copy():
    bm = BlockManager(6, 4)
    parent = allocated(bm, 8)  # exactly two full blocks
    child = bm.fork(parent)
    assert bm.slots_needed(child, 8, 1) == 1
    assert bm.allocate_slots(child, 8, 1) == []  # the new token opens a fresh block
    assert child[:2] == parent
    assert [bm.blocks[b].ref_count for b in parent] == [2, 2]
    bm.check_invariants([parent, child])


def test_copy_on_write_and_growth_in_one_call():
    bm = BlockManager(6, 4)
    parent = allocated(bm, 6)
    child = bm.fork(parent)
    free_before = bm.num_free_blocks
    copies = bm.allocate_slots(child, 6, 5)  # positions 6..10: finish block 1, open block 2
    assert copies == [(parent[1], child[1])]
    assert len(child) == 3 and len(set(child) - set(parent)) == 2
    assert free_before - bm.num_free_blocks == 2
    bm.check_invariants([parent, child])


def test_three_owners_copy_twice_then_write_in_place():
    bm = BlockManager(8, 4)
    a = allocated(bm, 2)
    b, c = bm.fork(a), bm.fork(a)
    shared = a[0]
    assert bm.blocks[shared].ref_count == 3
    assert bm.allocate_slots(a, 2, 1) == [(shared, a[0])]
    assert bm.allocate_slots(b, 2, 1) == [(shared, b[0])]
    assert bm.allocate_slots(c, 2, 1) == []  # the last owner keeps the original
    assert c == [shared]
    assert len({a[0], b[0], c[0]}) == 3
    bm.check_invariants([a, b, c])


def test_recomputing_last_token_of_a_shared_cached_block_copies_it():
    bm = BlockManager(6, 4)
    tokens = list(range(8))
    owner = computed(bm, tokens)
    hits = bm.find_cached_prefix(tokens)
    assert hits == owner
    bm.take(hits)
    table = list(hits)
    copies = bm.allocate_slots(table, 7, 1)  # a full hit recomputes position 7
    assert copies == [(owner[1], table[1])]
    assert table[0] == owner[0]
    assert bm.blocks[table[1]].key is None  # the copy is not (yet) a cached block
    assert bm.find_cached_prefix(tokens) == owner  # the cache still serves the original
    bm.check_invariants([owner, table])


def test_copy_evicts_least_recently_freed_cached_block():
    bm = BlockManager(3, 2)
    old = computed(bm, [1, 2])  # block 0
    bm.free_table(old)
    parent = allocated(bm, 3)  # blocks 1, 2
    child = bm.fork(parent)
    assert bm.allocate_slots(child, 3, 1) == [(2, 0)]  # the only free block was cached [1, 2]
    assert bm.cached == {}
    assert bm.find_cached_prefix([1, 2]) == []
    bm.check_invariants([parent, child])


# ---- the invariant checker itself ------------------------------------------------------------


def test_check_invariants_catches_a_missing_owner():
    bm = BlockManager(4, 2)
    table = allocated(bm, 3)
    with pytest.raises(AssertionError, match="ref"):
        bm.check_invariants([])  # the table's blocks are owned but no live table names them
    bm.check_invariants([table])


def test_check_invariants_catches_free_list_disagreement():
    bm = BlockManager(4, 2)
    table = allocated(bm, 2)
    bm.free[table[0]] = None  # owned and free at once
    with pytest.raises(AssertionError, match="free list"):
        bm.check_invariants([table])


def test_check_invariants_catches_stale_cache_entry():
    bm = BlockManager(4, 2)
    table = computed(bm, [1, 2])
    bm.cached[12345] = table[0]
    with pytest.raises(AssertionError, match="cache entry"):
        bm.check_invariants([table])


def test_registering_step_by_step_matches_at_once_and_skips_seen_blocks(monkeypatch):
    """With a progress record, each call looks only at blocks that filled since the last
    (a decode step costs one block at most), and ends where one call for all would."""
    from engine.core.block_manager import RegisterProgress

    tokens = list(range(100, 137))  # 9 full blocks of 4, one partial
    at_once, stepwise = BlockManager(16, 4), BlockManager(16, 4)
    computed(at_once, tokens)
    table = allocated(stepwise, len(tokens))
    progress = RegisterProgress()
    keys_computed = []
    real_key = stepwise.block_key
    monkeypatch.setattr(stepwise, "block_key", lambda p, t: keys_computed.append(t) or real_key(p, t))
    for done in range(1, len(tokens) + 1):
        stepwise.register_full_blocks(table, tokens, done, progress)
    assert len(keys_computed) == len(tokens) // 4  # each full block hashed exactly once
    assert progress.blocks == len(tokens) // 4
    assert stepwise.find_cached_prefix(tokens) == table[: len(tokens) // 4]
    assert [b.token_ids for b in stepwise.blocks if b.key] == [
        b.token_ids for b in at_once.blocks if b.key]
