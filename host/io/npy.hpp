#pragma once
// Private: the .npy header reader shared by the tensor readers (npy.cpp) and the token-file
// reader (token_files.cpp).

#include <tokemb/io.hpp>

#include "host/io/bytes.hpp"

namespace tokemb::detail {

/// Reads and checks the .npy header at the start of \p src (magic, version, header dict, item
/// size) and, by checked_data_bytes, that the data fits in \p src (and, with Trailing::rejected,
/// that nothing follows it). Only the header's bytes are read. Throws IoError (messages start
/// with ".npy"; callers add the file's name).
NpyHeader read_npy_header(const ByteSource& src, Trailing trailing);

}  // namespace tokemb::detail
