//! Parsing of `/proc/PID/cgroup`. (Being written.)
