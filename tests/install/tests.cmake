# Installs nattn into a scratch prefix and builds + runs a downstream project against it with
# find_package(nattn): the exported targets work.
add_test(NAME test_install_find_package
  COMMAND ${CMAKE_COMMAND}
    -DSOURCE_DIR=${PROJECT_SOURCE_DIR} -DBINARY_DIR=${PROJECT_BINARY_DIR}
    -DWORK_DIR=${CMAKE_CURRENT_BINARY_DIR}/install_check
    -P ${CMAKE_CURRENT_SOURCE_DIR}/install/run_install_check.cmake)
set_tests_properties(test_install_find_package PROPERTIES LABELS core)
