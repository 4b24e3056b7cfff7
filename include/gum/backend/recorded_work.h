#pragma once
// Device work recorded once (Backend::record) and enqueued again by each replay(), with the
// arguments it was recorded with: whatever must change between replays has to live in device
// memory written before them.

namespace gum {

class RecordedWork {
 public:
  virtual ~RecordedWork() = default;
  // False once the backend has moved a buffer of its own that the recording addresses (a scratch
  // buffer grown for a larger op since): replaying it would write freed memory; record again.
  virtual bool valid() const = 0;
  virtual void replay() = 0;
};

}  // namespace gum
