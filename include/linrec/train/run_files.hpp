#pragma once
// The files of a training run and the rules that keep them whole (docs/train_rwkv.md, "Rules"):
//   run_lock                     one process per checkpoint folder / log (flock; gone with the process)
//   remove_stale_temporaries     temp files of saves that a kill interrupted
//   save_keeping_previous        latest.safetensors replaced atomically, the one it replaces kept
//                                as previous.safetensors (a NaN stop may need to go back to it)
//   cut_log                      the log cut back to a checkpoint's step, atomically
//   check_outputs_apart          --log / --ckpt never overwrite or land inside the training data
// POSIX (flock, link, rename, fsync): the platforms the project builds on.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <system_error>
#include <vector>

#include "linrec/core/error.hpp"
#include "linrec/io/safetensors.hpp"

namespace linrec::train {

namespace fs = std::filesystem;

// An exclusive advisory lock on `file` (created if missing, never truncated), held while the
// object lives. The kernel drops it when the process ends, however it ends, so a crashed run
// never leaves a stale lock behind.
class run_lock {
 public:
  run_lock(const fs::path& file, const std::string& what) {
    fd_ = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    LINREC_CHECK(fd_ >= 0, file.string() << ": cannot open " << what << ": " << std::strerror(errno));
    if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      ::close(fd_);
      fd_ = -1;
      LINREC_CHECK(err != EWOULDBLOCK, file.string() << ": another process is using " << what
                                                     << " (two runs on one folder or log would overwrite each other)");
      LINREC_CHECK(false, file.string() << ": cannot lock " << what << ": " << std::strerror(err));
    }
  }
  run_lock(const run_lock&) = delete;
  run_lock& operator=(const run_lock&) = delete;
  ~run_lock() {
    if (fd_ >= 0) ::close(fd_);  // closing the descriptor releases the lock
  }

 private:
  int fd_ = -1;
};

// Removes `.latest.safetensors.tmp.*` files in `dir` (io::save_safetensors's temporaries) that
// a kill between write and rename left behind; call only while holding the folder's run_lock.
inline int remove_stale_temporaries(const fs::path& dir, const std::string& file_name = "latest.safetensors") {
  int removed = 0;
  std::error_code ec;
  const std::string prefix = "." + file_name + ".tmp.";
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with(prefix) && entry.is_regular_file(ec) && fs::remove(entry.path(), ec)) ++removed;
  }
  return removed;
}

// Writes `file` as dir/latest.safetensors (atomically: temp, fsync, rename) and keeps the
// checkpoint it replaces as dir/previous.safetensors (a hard link made before the rename, so
// at every moment latest.safetensors is a whole checkpoint).
inline void save_keeping_previous(const fs::path& dir, const io::tensor_file& file) {
  const fs::path latest = dir / "latest.safetensors", previous = dir / "previous.safetensors";
  std::error_code ec;
  if (fs::exists(latest, ec)) {
    const fs::path link_temp = dir / ".previous.safetensors.link";
    fs::remove(link_temp, ec);
    if (::link(latest.c_str(), link_temp.c_str()) == 0) fs::rename(link_temp, previous, ec);
  }
  io::save_safetensors(latest, file);
}

// Keeps the lines of a JSON-lines log whose "step" is at most `step` (complete JSON objects
// only: a partial line of a write that failed is dropped), written atomically over `path`.
// Returns the number of lines removed. A missing log is left missing.
inline std::size_t cut_log(const fs::path& path, std::int64_t step) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return 0;
  std::ifstream in(path, std::ios::binary);
  LINREC_CHECK(in, path.string() << ": cannot read the log to cut it back to step " << step);
  std::string kept, line;
  std::size_t removed = 0;
  while (std::getline(in, line)) {
    const bool complete = !in.eof();  // the last line without '\n' was cut short by a failed write
    const auto record = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (complete && record.is_object() && record.contains("step") && record["step"].is_number_integer() &&
        record["step"].get<std::int64_t>() <= step)
      kept += line + '\n';
    else
      ++removed;
  }
  LINREC_CHECK(!in.bad(), path.string() << ": read error while cutting the log back");
  in.close();
  if (removed == 0) return 0;
  std::string temp = (path.parent_path() / ("." + path.filename().string() + ".cut.XXXXXX")).string();
  if (path.parent_path().empty()) temp = "." + path.filename().string() + ".cut.XXXXXX";
  const int fd = ::mkstemp(temp.data());
  LINREC_CHECK(fd >= 0, path.string() << ": cannot create a temporary file to cut the log: " << std::strerror(errno));
  const bool written = ::write(fd, kept.data(), kept.size()) == static_cast<ssize_t>(kept.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!written || std::rename(temp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(temp.c_str());
    LINREC_CHECK(false, path.string() << ": cutting the log back failed: " << std::strerror(err));
  }
  return removed;
}

// Whether `inner` is `outer` or lies inside the folder `outer` (paths made absolute and
// normalised; symlinks of existing parts resolved).
inline bool path_within(const fs::path& inner, const fs::path& outer) {
  std::error_code ec;
  const fs::path a = fs::weakly_canonical(fs::absolute(inner, ec), ec),
                 b = fs::weakly_canonical(fs::absolute(outer, ec), ec);
  auto ai = a.begin();
  for (auto bi = b.begin(); bi != b.end(); ++bi, ++ai) {
    if (bi->empty()) continue;  // a trailing separator
    if (ai == a.end() || *ai != *bi) return false;
  }
  return true;
}

// Outputs never alias the training data: --log must not be the data file or inside the data
// folder (it would be overwritten, or read back as text on the next run); likewise --ckpt.
inline void check_outputs_apart(const fs::path& data, const fs::path& log, const fs::path& ckpt) {
  if (!log.empty())
    LINREC_CHECK(!path_within(log, data), "--log " << log.string() << " is the training data or inside it (--data "
                                                   << data.string() << "): the log would overwrite or join the text");
  if (!ckpt.empty())
    LINREC_CHECK(!path_within(ckpt, data), "--ckpt " << ckpt.string() << " is the training data or inside it (--data "
                                                     << data.string() << "): checkpoints would be read back as text");
}

}  // namespace linrec::train
