// Subcommand bodies of the `liveavatar` executable. Each takes the parsed command, does its work, logs, and
// returns the process exit status (0 success, 1 failure, 2 usage / not yet implemented). Internal to
// apps/liveavatar; main.cpp dispatches and catches exceptions once.
#pragma once

#include "cli_parse.h"

namespace liveavatar::cli {

int RunDoctor(const ParsedCommand& cmd);    // cli_doctor.cpp
int RunConvert(const ParsedCommand& cmd);   // cli_convert.cpp
int RunMakeTiny(const ParsedCommand& cmd);  // cli_make_tiny.cpp
int RunGenerate(const ParsedCommand& cmd);  // cli_generate.cpp
// Exit status = number of failed jobs (capped at 125).
int RunBatch(const ParsedCommand& cmd);     // cli_generate.cpp

}  // namespace liveavatar::cli
