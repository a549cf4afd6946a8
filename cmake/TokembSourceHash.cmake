# tokemb_source_hash(OUT SOURCE_DIR): one SHA-256 over the sources the library is built from
# (CMakeLists.txt, cmake/, include/, core/, host/, kernels/: each file's path relative to
# SOURCE_DIR and its own SHA-256, in path order). `cmake --install` records it in the prefix
# (lib/cmake/tokemb/tokembSourceHash.txt); a Python extension built against that prefix
# (TOKEMB_PYTHON_PREBUILT) compares it with its own source tree's, so a prefix installed from
# other sources is never linked silently. Used at configure time and from install(CODE).
function(tokemb_source_hash out source_dir)
  file(GLOB_RECURSE files RELATIVE "${source_dir}"
       "${source_dir}/cmake/*" "${source_dir}/include/*" "${source_dir}/core/*"
       "${source_dir}/host/*" "${source_dir}/kernels/*")
  list(APPEND files CMakeLists.txt)
  list(SORT files)
  set(manifest "")
  foreach(f IN LISTS files)
    file(SHA256 "${source_dir}/${f}" h)
    string(APPEND manifest "${f} ${h}\n")
  endforeach()
  string(SHA256 total "${manifest}")
  set(${out} "${total}" PARENT_SCOPE)
endfunction()
