# Runs COMMAND (arguments separated by "|") and passes when it exits non-zero within MAX_SECONDS
# with output matching the regular expression EXPECT: a failed rank must end the whole job
# promptly and say which rank failed.
#   cmake -DCOMMAND="prog|arg" -DEXPECT=regex -DMAX_SECONDS=40 -P expect_failure.cmake
string(REPLACE "|" ";" command "${COMMAND}")
string(TIMESTAMP started "%s")
execute_process(COMMAND ${command} RESULT_VARIABLE result OUTPUT_VARIABLE output ERROR_VARIABLE output
                TIMEOUT ${MAX_SECONDS})
string(TIMESTAMP finished "%s")
math(EXPR elapsed "${finished} - ${started}")
message("exit: ${result} after ${elapsed} s\n--- output ---\n${output}--------------")
if(result MATCHES "timeout")
  message(FATAL_ERROR "the job did not end within ${MAX_SECONDS} s: a rank hangs")
endif()
if(result STREQUAL "0")
  message(FATAL_ERROR "the job exited with 0 although a rank failed")
endif()
if(NOT output MATCHES "${EXPECT}")
  message(FATAL_ERROR "the output does not name the failure: expected a match for '${EXPECT}'")
endif()
