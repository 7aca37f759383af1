# Reader of the golden-case format (shared/testdata/golden/README.md); used by `nattn verify` and tests.
add_library(nattn_golden STATIC tools/golden/golden.cpp tools/golden/json.cpp)
target_include_directories(nattn_golden PUBLIC ${PROJECT_SOURCE_DIR}/tools)
target_link_libraries(nattn_golden PUBLIC nattn PRIVATE nattn_warnings)
