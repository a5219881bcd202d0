"""How both GPU families split a reduction over rows across blocks (split-K): each split
sums its rows into a partial, and the partials are added in a fixed order afterwards.

The rule aims at about TARGET_BLOCKS blocks in all (about 4 per SM of a 132-SM H200), with at
least MIN_ROWS rows per split, so that small sizes are one split (no partials, no second
kernel). Both numbers are provisional (set without a GPU). The split depends on the shapes
only, never on the device, so the summation order, and the result, is the same on every run
and every GPU model.
"""

TARGET_BLOCKS = 512
MIN_ROWS = 256


def split_rows(rows, blocks_per_split, multiple=1):
    """(rows per split, splits) for a reduction over `rows` whose every split runs
    `blocks_per_split` blocks; rows per split a multiple of `multiple`."""
    wanted = max(1, TARGET_BLOCKS // max(blocks_per_split, 1))
    per_split = max(MIN_ROWS, -(-rows // wanted))
    per_split = -(-per_split // multiple) * multiple
    return per_split, max(1, -(-rows // per_split))
