// Subcommands of the `nattn` CLI. Each returns the process exit code: 0 success, 1 failure
// (a failed check or a runtime error), 2 invalid usage / arguments. They never call exit().
#pragma once

namespace nattn::cli {

// `nattn verify DIR [--backend NAME] [--dtype fp32|fp16|bf16]` (tools/nattn/verify.cpp).
// argv[0] is "verify".
int run_verify(int argc, char** argv);

// `nattn profile ...` (tools/nattn/profile/). argv[0] is "profile".
int run_profile(int argc, char** argv);

}  // namespace nattn::cli
