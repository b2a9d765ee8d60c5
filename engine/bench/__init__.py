"""`rnnstream bench`: the engine against PyTorch in one process (`steps`) and the daemon end to
end with producer and subscriber processes (`e2e`, its jitted send and receive phases in
`io_phases`, the machine's own stalls in `stalls`); and `snapshot_check`, the check of a
daemon's periodic snapshots while `python bench/soak.py` runs. Never run by the tests; results
and notes in the repository's bench/ folder."""
