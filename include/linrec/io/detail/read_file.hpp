#pragma once
// Reading a whole input file (checkpoint, corpus) without trusting it to be a file.
//
//   std::vector<std::byte> bytes = read_regular_file<std::byte>(path, 16ull << 30, "safetensors_options::max_bytes");
//
// A path may name /dev/zero (endless), a FIFO (opening it for reading blocks until a writer
// comes), a socket, a directory, or a symlink to any of them; reading such a thing "to EOF"
// grows memory until the OOM killer or hangs forever. So, in this order:
//   1. stat() the path, following symlinks, and refuse anything but a regular file before
//      opening it: "is not a regular file (it is a FIFO)";
//   2. refuse a size above `max_bytes`, known before any byte is read;
//   3. open with O_NONBLOCK (should the path have been replaced by a FIFO since step 1, the
//      open returns at once instead of blocking) and fstat() the descriptor: it must be the
//      same regular file (device and inode) with the same size;
//   4. read exactly that many bytes, then probe for one more: a file that shrank or grew
//      while being read is an error, never a silently different length.
// Every error is one line naming the path (throw_file_error).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "linrec/io/detail/file_error.hpp"

namespace linrec::io::detail {

// What a non-regular file is, for the message.
inline const char* file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  return "not a regular file";
}

// Closes a descriptor at scope exit.
class fd_closer {
 public:
  explicit fd_closer(int fd) : fd_(fd) {}
  fd_closer(const fd_closer&) = delete;
  fd_closer& operator=(const fd_closer&) = delete;
  ~fd_closer() { ::close(fd_); }

 private:
  int fd_;
};

// The bytes of the regular file `path` (symlinks followed), at most `max_bytes` of them.
// `limit_name` names the setting that raises the bound, for the message.
template <class Byte>
std::vector<Byte> read_regular_file(const std::filesystem::path& path, std::uint64_t max_bytes,
                                    std::string_view limit_name) {
  static_assert(sizeof(Byte) == 1);
  const std::string name = path.string();
  const auto fail_errno = [&](std::string_view what, int error_number) {
    throw_file_error(
        name, concat(what, ": ", error_number == ENOENT ? std::string("no such file") : errno_text(error_number)));
  };
  struct stat before {};
  if (::stat(name.c_str(), &before) != 0) fail_errno("cannot open", errno);
  if (!S_ISREG(before.st_mode))
    throw_file_error(name, concat("is not a regular file (it is ", file_kind(before.st_mode), ")"));
  const auto size = static_cast<std::uint64_t>(before.st_size);
  if (size > max_bytes)
    throw_file_error(name,
                     concat("is ", size, " bytes, more than the limit of ", max_bytes, " bytes (", limit_name, ")"));

  const int fd = ::open(name.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) fail_errno("cannot open", errno);
  const fd_closer closer(fd);
  struct stat opened {};
  if (::fstat(fd, &opened) != 0) fail_errno("cannot stat the opened file", errno);
  if (!S_ISREG(opened.st_mode) || opened.st_dev != before.st_dev || opened.st_ino != before.st_ino ||
      opened.st_size != before.st_size)
    throw_file_error(name, "was replaced or changed while being opened");

  std::vector<Byte> bytes(static_cast<std::size_t>(size));
  std::uint64_t done = 0;
  while (done < size) {
    const ssize_t got = ::read(fd, bytes.data() + done, static_cast<std::size_t>(size - done));
    if (got < 0) {
      if (errno == EINTR) continue;
      fail_errno("read error", errno);
    }
    if (got == 0)
      throw_file_error(name, concat("shrank while being read: ", done, " of the ", size, " bytes it had were there"));
    done += static_cast<std::uint64_t>(got);
  }
  for (;;) {  // one byte more means the file grew (or is a /proc-style file whose size lies)
    unsigned char extra = 0;
    const ssize_t got = ::read(fd, &extra, 1);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) fail_errno("read error", errno);
    if (got > 0) throw_file_error(name, concat("grew while being read: it had ", size, " bytes when opened"));
    break;
  }
  return bytes;
}

}  // namespace linrec::io::detail
