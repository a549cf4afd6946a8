#pragma once
// Private to the tokemb CLI: the pieces shared by its commands.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <tokemb/tokemb.hpp>

namespace tokemb::cli {

/// The device a command runs on, and a sentence saying why.
struct DeviceChoice {
  Device device = Device::cpu();
  std::string reason;
};

/// --device absent: the first CUDA device if there is one, else the CPU (saying why).
/// "cpu": the CPU. "cuda" / "cuda:N": that device, or tokemb::Unsupported / InvalidArgument
/// (exit code 1) when this build or machine has none. Anything else: UsageError.
DeviceChoice choose_device(const std::optional<std::string>& flag);

/// "the CPU reference backend" or "CUDA device cuda:0".
std::string describe(Device device);

/// An owning stream for a CUDA device (none for the CPU), and the view to pass to tokemb.
class StreamHolder {
 public:
  explicit StreamHolder(Device device);
  StreamView view() const noexcept;

 private:
  std::optional<Stream> stream_;
};

/// Copies host int64 ids of \p shape to a new buffer on \p device (synchronously).
Buffer ids_on(Device device, const std::vector<std::int64_t>& ids, Shape shape, StreamView stream);

/// "12.3 MiB".
std::string format_bytes(double bytes);

/// Seconds since construction.
class Stopwatch {
 public:
  double seconds() const {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

}  // namespace tokemb::cli
