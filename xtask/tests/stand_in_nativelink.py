#!/usr/bin/env python3
"""A MOCK of the `nativelink` binary, for the tests of `cargo xtask up/down/status`.

NativeLink is in no package registry this project's CI can reach, so these tests exercise the
xtask's process management (start, readiness, identity, stop, Ctrl-C) against this stand-in. It
reads the config `up` rendered, listens on every server's `socket_address` and answers a gRPC
client's HTTP/2 preface with a SETTINGS frame; it serves no REAPI. The real engine is exercised by
tests/nativelink.rs when LRE_NATIVELINK names a real binary.

Knobs, from the environment:
  STAND_IN_VERSION        what `--version` reports (default 1.4.0)
  STAND_IN_EXIT_FOR       a process name (config file stem) that fails at start, like a bad config
  STAND_IN_DELAY_FOR      a process name that waits STAND_IN_DELAY_SECONDS before listening
"""

import json
import os
import pathlib
import socket
import sys
import threading
import time


def serve(address):
    host, port = address.rsplit(":", 1)
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.bind((host, int(port)))
    listener.listen(16)
    while True:
        connection, _ = listener.accept()
        threading.Thread(target=answer, args=(connection,), daemon=True).start()


def answer(connection):
    with connection:
        try:
            connection.settimeout(5)
            connection.recv(64)
            connection.sendall(bytes([0, 0, 0, 0x4, 0, 0, 0, 0, 0]))
            connection.recv(64)
        except OSError:
            pass


def main():
    if sys.argv[1:] == ["--version"]:
        print("nativelink " + os.environ.get("STAND_IN_VERSION", "1.4.0"))
        return 0
    config_path = pathlib.Path(sys.argv[1])
    name = config_path.stem
    config = json.loads(config_path.read_text())
    print(f"stand-in nativelink: {name} read {config_path}", flush=True)
    if os.environ.get("STAND_IN_EXIT_FOR") == name:
        print(f"stand-in nativelink: {name}: simulated failure at start", flush=True)
        return 3
    if os.environ.get("STAND_IN_DELAY_FOR") == name:
        time.sleep(float(os.environ.get("STAND_IN_DELAY_SECONDS", "30")))
    for server in config["servers"]:
        address = server["listener"]["http"]["socket_address"]
        threading.Thread(target=serve, args=(address,), daemon=True).start()
        print(f"stand-in nativelink: {name} listening on {address}", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
