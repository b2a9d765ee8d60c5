"""The daemon's per-pass work that is not maths, compiled with Numba so that a pass costs a few
calls instead of one Python call per reading: the msgpack of plain intake frames and of
predictions (`wire`), the frames' trip through libzmq (`zmqcalls`) and the stream-id table
(`idindex`). Each has a Python equivalent it is tested against (`protocol`, pyzmq, `slot_of`)."""
