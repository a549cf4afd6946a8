#pragma once
/// \file stream.hpp
/// Non-owning and owning CUDA stream handles that do not require the CUDA headers.

#include <tokemb/types.hpp>

struct CUstream_st;  // the type behind cudaStream_t

namespace tokemb {

/// A non-owning view of a CUDA stream (`cudaStream_t` converts to it implicitly). Every
/// tokemb operation takes one explicitly and orders its work on it; operations on CPU tensors
/// ignore it. Construction from an integer is deleted so that a literal 0 cannot silently mean
/// the legacy default stream: say StreamView::legacy_default() if that is what you want.
class StreamView {
 public:
  constexpr StreamView(CUstream_st* stream) noexcept : stream_(stream) {}  // NOLINT: implicit
  StreamView(int) = delete;
  StreamView(std::nullptr_t) = delete;

  /// The legacy default stream (stream 0), which synchronises with other blocking streams.
  static constexpr StreamView legacy_default() noexcept { return StreamView(Tag{}, nullptr); }
  /// The per-thread default stream (`cudaStreamPerThread`).
  static StreamView per_thread() noexcept {
    return StreamView(Tag{}, reinterpret_cast<CUstream_st*>(0x2));
  }

  /// The stream as a cudaStream_t.
  constexpr CUstream_st* value() const noexcept { return stream_; }

 private:
  struct Tag {};
  constexpr StreamView(Tag, CUstream_st* s) noexcept : stream_(s) {}
  CUstream_st* stream_;
};

/// An owning, move-only CUDA stream created non-blocking on a given device.
/// Throws tokemb::Unsupported in a build without the CUDA backend.
class Stream {
 public:
  explicit Stream(int device = 0);
  ~Stream();
  Stream(Stream&& other) noexcept;
  Stream& operator=(Stream&& other) noexcept;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  StreamView view() const noexcept { return StreamView(stream_); }
  operator StreamView() const noexcept { return view(); }  // NOLINT: implicit by design
  /// Blocks the calling thread until all work on the stream is done.
  void synchronize() const;
  int device() const noexcept { return device_; }

 private:
  CUstream_st* stream_ = nullptr;
  int device_ = 0;
};

/// Number of CUDA devices visible to this process; 0 without a GPU, a driver, or the CUDA
/// backend. Never throws.
int cuda_device_count() noexcept;

/// Blocks until all work on \p stream is done (no-op in a CPU-only build).
void synchronize(StreamView stream);

}  // namespace tokemb
