"""Run Java through the Java runtime chosen by toolchain resolution.

`lre_java_run` (executable) and `lre_java_test` (test) write a launcher that
runs the resolved runtime's `java` either on a single `.java` source file via
the JDK's single-file source launcher (JEP 330, JDK 11+), i.e.
`java [jvm_flags] Hello.java [args]`, or, without `src`, as `java [args]`
(e.g. `args = ["-version"]`). No Java compilation happens, so neither a
java_toolchain nor remote_java_tools is needed.
"""

JAVA_RUNTIME_TOOLCHAIN_TYPE = "@bazel_tools//tools/jdk:runtime_toolchain_type"

_LAUNCHER = """#!/bin/sh
# Launcher written by lre_java_run for {label}.
set -eu
R="${{RUNFILES_DIR:-${{TEST_SRCDIR:-$0.runfiles}}}}"
resolve() {{
  case "$1" in
    /*) printf '%s' "$1" ;;
    *) printf '%s' "$R/$1" ;;
  esac
}}
JAVA="$(resolve '{java}')"
{source_line}exec "$JAVA" {jvm_flags}${{SRC:+"$SRC"}} "$@"
"""

def _runfiles_path(ctx, path):
    """Absolute paths stay; others become relative to the runfiles root."""
    if path.startswith("/"):
        return path
    if path.startswith("../"):  # file of an external repository
        return path[len("../"):]
    return ctx.workspace_name + "/" + path

def _quote(s):
    return "'" + s.replace("'", "'\\''") + "'"

def _impl(ctx):
    toolchain = ctx.toolchains[JAVA_RUNTIME_TOOLCHAIN_TYPE]

    # Bazel 5+ wraps JavaRuntimeInfo in `.java_runtime`; in Bazel 4 the
    # ToolchainInfo itself carries the java_runtime fields.
    runtime = getattr(toolchain, "java_runtime", toolchain)
    src = ctx.file.src
    launcher = ctx.actions.declare_file(ctx.label.name)
    ctx.actions.write(
        output = launcher,
        is_executable = True,
        content = _LAUNCHER.format(
            label = str(ctx.label),
            java = _runfiles_path(ctx, runtime.java_executable_runfiles_path),
            source_line = "SRC=\"$(resolve %s)\"\n" % _quote(_runfiles_path(ctx, src.short_path)) if src else "SRC=\n",
            jvm_flags = "".join([_quote(f) + " " for f in ctx.attr.jvm_flags]),
        ),
    )
    runfiles = ctx.runfiles(
        files = [src] if src else [],
        transitive_files = runtime.files,
    )
    return [DefaultInfo(executable = launcher, runfiles = runfiles)]

_ATTRS = {
    "jvm_flags": attr.string_list(doc = "Flags for `java` placed before the source file."),
    "src": attr.label(allow_single_file = [".java"], doc = "Single-file Java program (JEP 330)."),
}

lre_java_run = rule(
    implementation = _impl,
    attrs = _ATTRS,
    executable = True,
    toolchains = [JAVA_RUNTIME_TOOLCHAIN_TYPE],
)

lre_java_test = rule(
    implementation = _impl,
    attrs = _ATTRS,
    test = True,
    toolchains = [JAVA_RUNTIME_TOOLCHAIN_TYPE],
)
