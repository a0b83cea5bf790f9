"""Offline stand-in (Debian Bazel 4.2.3 only): same label as rules_cc's file."""

load("//cc:globals.bzl", "GLOBALS")

cc_common = GLOBALS.cc_common
