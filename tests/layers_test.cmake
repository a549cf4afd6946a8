# CTest: the private layers only point down. include/tokemb (public) <- core/ (shared by both
# backends) <- kernels/ (CUDA) <- host/ (the library's host code). A file in core/ may include
# public headers and other core/ headers; a file in kernels/ may add kernels/ headers; only
# host/ (and tools, tests, benchmarks) may include host/ headers. Input: SOURCE_DIR.
set(errors "")
function(check_dir dir forbidden_regex)
  file(GLOB_RECURSE files "${SOURCE_DIR}/${dir}/*")
  foreach(f IN LISTS files)
    file(STRINGS "${f}" lines REGEX "^[ \t]*#[ \t]*include[ \t]*\"")
    foreach(line IN LISTS lines)
      if(line MATCHES "${forbidden_regex}")
        file(RELATIVE_PATH rel "${SOURCE_DIR}" "${f}")
        string(APPEND errors "\n  ${rel}: ${line}")
      endif()
    endforeach()
  endforeach()
  set(errors "${errors}" PARENT_SCOPE)
endfunction()
check_dir(core "\"(host|kernels|tools|tests|bench)/")
check_dir(kernels "\"(host|tools|tests|bench)/")
if(errors)
  message(FATAL_ERROR "includes that point up a layer:${errors}")
endif()
message(STATUS "layers: core/ and kernels/ include nothing from the layers above them")
