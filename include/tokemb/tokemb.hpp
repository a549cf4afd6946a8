#pragma once
/// \file tokemb.hpp
/// Umbrella header: everything in tokemb's public API.

#include <tokemb/config.hpp>
#include <tokemb/embedding.hpp>
#include <tokemb/error.hpp>
#include <tokemb/init.hpp>
#include <tokemb/io.hpp>
#include <tokemb/ops.hpp>
#include <tokemb/stream.hpp>
#include <tokemb/tensor.hpp>
#include <tokemb/token_files.hpp>
#include <tokemb/types.hpp>
