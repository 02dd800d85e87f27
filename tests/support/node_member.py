"""node_member.py - a process that joins a vramd node socket with the gpu_manager package, for the node-view tests.

usage: /usr/bin/python3 node_member.py SOCKET NAME MODEL=BYTES [MODEL=BYTES...] [--hold MODEL]

Loads every MODEL (plain bytes, host backend, no torch), prints "ready PID"
on stdout, then waits until its stdin closes (the test ending or dying ends
it too). --hold MODEL keeps a lease on MODEL meanwhile (orders to it answer
EBUSY). PYTHONPATH and VRAM_LIBRARY must point at the build (the tests pass
VRAM_PYTHONPATH and VRAM_LIBRARY from CMake).
"""
import os
import sys


def main(argv):
    if len(argv) < 3:
        sys.stderr.write(__doc__)
        return 2
    sock, name, rest = argv[0], argv[1], argv[2:]
    hold = None
    if "--hold" in rest:
        i = rest.index("--hold")
        hold = rest[i + 1]
        del rest[i:i + 2]
    import gpu_manager as gm
    g = gm.GPUManager(config={"VRAM_NODE_SOCKET": sock, "VRAM_NODE_NAME": name,
                              "VRAM_BACKEND": "host", "VRAM_HOST_MEMORY": "256M",
                              "VRAM_HOST_DEVICES": "1", "VRAM_LOG_LEVEL": "warn"})
    models = {}
    for spec in rest:
        model, size = spec.split("=", 1)
        mm = g.register_model(model)
        mm.get_model(lambda n=int(size): bytes(n))
        models[model] = mm
    lease = None
    if hold:
        lease = models[hold].use()
        lease.__enter__()
    sys.stdout.write("ready %d\n" % os.getpid())
    sys.stdout.flush()
    sys.stdin.read()  # until the test closes it
    if lease:
        lease.__exit__(None, None, None)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
