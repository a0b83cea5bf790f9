#!/bin/sh
# No-op coverage tool (offline stub for Debian Bazel 4.2.3).
exit 0
