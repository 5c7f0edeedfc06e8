"""How long a process waits for another that holds the memory: one limit for every such wait.

A write waits for another process's write (SQLite's write lock, store/sqlite.py); a
process that opens or rebuilds the index waits for another that rebuilds it, and one that
saves, scrubs or loads the saved index for another doing so (search/saved.py). Past the
limit each gives up with a `MemoryBusyError` that says who held it, rather than hang
behind a process that is stopped or stuck.
"""

# Writers queue on one lock, and several `vismem add` processes on a busy machine were
# seen waiting over 30 s in turn. Read at each wait (`waits.BUSY_SECONDS`), so that a
# program or a test may change it.
BUSY_SECONDS = 120
