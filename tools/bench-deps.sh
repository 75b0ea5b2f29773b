#!/bin/sh
# What the benchmark harness needs (Debian 12, as root): the test path's
# packages plus the data-science stack repacked into the workload's
# wheelhouse and the measuring tools.  The test path does not need them.
exec "$(dirname "$0")/install-deps.sh" --perf
