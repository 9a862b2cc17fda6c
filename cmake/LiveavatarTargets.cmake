# Helpers that define the engine's component libraries and test executables with one policy.
#
# la_component(<name> DIR <src subdir> [DEPS <targets...>] [LIBS <external targets...>])
#   A static library `la_<name>` from every .cpp under src/<DIR> (non-recursive), public headers from include/.
# la_test(<name> DIR <tests subdir> DEPS <targets...>)
#   A GoogleTest executable `test_<name>` from every *_test.cpp under tests/<DIR>, discovered by ctest at test time.

set(LA_PCH_HEADER ${PROJECT_SOURCE_DIR}/cmake/pch.h)

function(la_apply_policy target)
  target_compile_options(${target} PRIVATE ${LIVEAVATAR_WARNINGS} -fPIC)
  target_compile_definitions(${target} PUBLIC
    $<$<BOOL:${LIVEAVATAR_HAVE_FFMPEG}>:LIVEAVATAR_HAVE_FFMPEG=1>
    $<$<BOOL:${LIVEAVATAR_HAVE_SNDFILE}>:LIVEAVATAR_HAVE_SNDFILE=1>
    $<$<BOOL:${LIVEAVATAR_HAVE_SENTENCEPIECE}>:LIVEAVATAR_HAVE_SENTENCEPIECE=1>
    $<$<BOOL:${LIVEAVATAR_HAVE_CUDA}>:LIVEAVATAR_HAVE_CUDA=1>)
  if(LIVEAVATAR_USE_PCH)
    if(TARGET la_pch_anchor)
      target_precompile_headers(${target} REUSE_FROM la_pch_anchor)
    endif()
  endif()
endfunction()

function(la_component name)
  cmake_parse_arguments(A "" "DIR" "DEPS;LIBS;EXTRA_SOURCES" ${ARGN})
  file(GLOB _srcs CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/${A_DIR}/*.cpp)
  list(APPEND _srcs ${A_EXTRA_SOURCES})
  if(NOT _srcs)
    set(_srcs ${PROJECT_SOURCE_DIR}/cmake/pch_anchor.cpp)  # component not written yet
  endif()
  add_library(la_${name} STATIC ${_srcs})
  target_include_directories(la_${name} PUBLIC ${PROJECT_SOURCE_DIR}/include PRIVATE ${PROJECT_SOURCE_DIR}/src)
  target_link_libraries(la_${name} PUBLIC ${A_DEPS} ${TORCH_LIBRARIES} PRIVATE ${A_LIBS})
  set_target_properties(la_${name} PROPERTIES POSITION_INDEPENDENT_CODE ON)
  la_apply_policy(la_${name})
endfunction()

function(la_test name)
  cmake_parse_arguments(A "" "DIR" "DEPS" ${ARGN})
  file(GLOB _srcs CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/tests/${A_DIR}/*_test.cpp)
  if(NOT _srcs)
    return()
  endif()
  add_executable(test_${name} ${_srcs})
  target_include_directories(test_${name} PRIVATE ${PROJECT_SOURCE_DIR}/tests ${PROJECT_SOURCE_DIR}/src)
  target_link_libraries(test_${name} PRIVATE ${A_DEPS} la_testing GTest::gtest GTest::gtest_main)
  la_apply_policy(test_${name})
  gtest_discover_tests(test_${name}
    DISCOVERY_MODE PRE_TEST
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
    PROPERTIES ENVIRONMENT "LIVEAVATAR_SOURCE_DIR=${PROJECT_SOURCE_DIR}"
    DISCOVERY_TIMEOUT 60)
endfunction()

# la_cuda_library(<name> <STATIC|OBJECT> <sources...>)
#   A library of .cu sources built by nvcc for LIVEAVATAR_CUDA_ARCHITECTURES against the shared CUDA runtime (the
#   one LibTorch uses), with the project's include/ and host-compiler warnings.
function(la_cuda_library name kind)
  add_library(${name} ${kind} ${ARGN})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR}/include)
  set_target_properties(${name} PROPERTIES
    CUDA_ARCHITECTURES "${LIVEAVATAR_CUDA_ARCHITECTURES}"
    CUDA_STANDARD 17
    CUDA_STANDARD_REQUIRED ON
    CUDA_RUNTIME_LIBRARY Shared
    POSITION_INDEPENDENT_CODE ON)
  target_compile_options(${name} PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra>
    $<$<AND:$<COMPILE_LANGUAGE:CUDA>,$<BOOL:${LIVEAVATAR_WERROR}>>:-Werror=all-warnings>)
endfunction()
