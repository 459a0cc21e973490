"""Status codes returned by every kernel's input pre-pass (0 = success).

A kernel checks its index and reward arguments in one pass *before* it writes anything, so a bad
batch leaves every table untouched; the public wrappers turn a non-zero code into a ValueError that
names the argument.
"""
OK = 0
BAD_STATES = 1
BAD_ACTIONS = 2
BAD_NEXT_STATES = 3
BAD_NEXT_ACTIONS = 4
BAD_REWARDS = 5
BAD_OFFSETS = 6
# Array arguments of inconsistent shapes (a too-short output, per-token input, ...): checked first
# by every kernel that does a shape check, before any other check and before anything is written.
# The public wrappers always pass consistent shapes; only a direct Numba/Cython caller can get it.
BAD_SHAPES = 7
# An array the kernel writes (a table, tree nodes, an output) shares memory with another array
# argument: a write could change an id after its range check (an out-of-bounds access).  Checked
# in O(1) from the arrays' address ranges, after BAD_SHAPES and before anything is written.  The
# public wrappers refuse it first with a message naming both arguments.
OVERLAPPING_ARRAYS = 8

ARGUMENT = {
    BAD_STATES: "states",
    BAD_ACTIONS: "actions",
    BAD_NEXT_STATES: "next_states",
    BAD_NEXT_ACTIONS: "next_actions",
    BAD_REWARDS: "rewards",
    BAD_OFFSETS: "episode_offsets",
    BAD_SHAPES: "array shapes",
    OVERLAPPING_ARRAYS: "array arguments (one written shares memory with another)",
}
