// Device selection, streams and small formatting helpers of the tokemb CLI.
#include "tools/cli/common.hpp"

#include <charconv>
#include <climits>
#include <cstdio>

#include "tools/cli/errors.hpp"

namespace tokemb::cli {

DeviceChoice choose_device(const std::optional<std::string>& flag) {
  const bool built_with_cuda = TOKEMB_WITH_CUDA != 0;
  const int gpus = cuda_device_count();
  if (!flag) {
    if (gpus > 0)
      return {Device::cuda(0), "a CUDA device is present (use --device cpu for the CPU)"};
    return {Device::cpu(), built_with_cuda ? "no CUDA device is visible"
                                           : "this build of tokemb has no CUDA backend"};
  }
  const std::string& v = *flag;
  if (v == "cpu") return {Device::cpu(), "requested with --device cpu"};
  if (v != "cuda" && v.compare(0, 5, "cuda:") != 0) {
    throw UsageError("--device '" + v + "' is not one of: cpu, cuda, cuda:N");
  }
  int index = 0;
  if (v.size() > 4) {
    const char* begin = v.data() + 5;
    const char* end = v.data() + v.size();
    const auto [ptr, ec] = std::from_chars(begin, end, index);
    if (ec == std::errc::result_out_of_range) {
      throw UsageError("--device '" + v + "': device index " + std::string(begin, end) +
                       " is too large (at most " + std::to_string(INT_MAX) +
                       "; devices are numbered from cuda:0)");
    }
    if (ec != std::errc() || ptr != end || begin == end || index < 0) {
      throw UsageError("--device '" + v + "': expected cuda:N with N a device index >= 0");
    }
  }
  if (!built_with_cuda) {
    throw Unsupported("--device " + v +
                      ": this build of tokemb has no CUDA backend (it was configured with "
                      "TOKEMB_WITH_CUDA=OFF or without a CUDA toolkit); use --device cpu");
  }
  if (gpus == 0) {
    throw Unsupported("--device " + v +
                      ": no CUDA device is visible to this process; use "
                      "--device cpu (or leave --device out to pick the CPU automatically)");
  }
  if (index >= gpus) {
    throw InvalidArgument("--device " + v + ": there is no CUDA device " + std::to_string(index) +
                          "; valid devices are cuda:0 to cuda:" + std::to_string(gpus - 1));
  }
  return {Device::cuda(index), "requested with --device " + v};
}

std::string describe(Device device) {
  if (device.is_cpu()) return "the CPU reference backend";
  return "CUDA device " + device.str();
}

StreamHolder::StreamHolder(Device device) {
  if (device.is_cuda()) stream_.emplace(device.index);
}

StreamView StreamHolder::view() const noexcept {
  return stream_ ? stream_->view() : StreamView::legacy_default();
}

Buffer ids_on(Device device, const std::vector<std::int64_t>& ids, Shape shape, StreamView stream) {
  if (static_cast<std::int64_t>(ids.size()) != shape.numel()) {
    throw InvalidArgument("ids_on: " + std::to_string(ids.size()) + " ids do not fill shape " +
                          shape.str());
  }
  Buffer b(DType::i64, shape, device);
  copy(b, TensorView(ids.data(), DType::i64, shape, Device::cpu()), stream);
  synchronize(stream);
  return b;
}

std::string format_bytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024.0 && u < 4) {
    bytes /= 1024.0;
    ++u;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", bytes, units[u]);
  return buf;
}

}  // namespace tokemb::cli
