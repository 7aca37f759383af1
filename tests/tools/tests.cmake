include(tools/verify.cmake)
include(tools/profile.cmake)
