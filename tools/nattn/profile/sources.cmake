# `nattn profile` (NATTEN's profiler options; see tools/nattn/profile/options.cpp for --help).
target_sources(nattn_cli PRIVATE
  tools/nattn/profile/profile.cpp
  tools/nattn/profile/options.cpp
  tools/nattn/profile/plan.cpp
  tools/nattn/profile/run.cpp
  tools/nattn/profile/dry_run.cpp
  tools/nattn/profile/optimize.cpp
  tools/nattn/profile/workspace.cpp
  tools/nattn/profile/timing.cpp
  tools/nattn/profile/report.cpp)
