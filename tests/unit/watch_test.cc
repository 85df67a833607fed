#include "../../userspace/cidd/watch.h"

#include <gtest/gtest.h>

#include <map>
#include <thread>

#include "test_util.h"

namespace cid {
namespace {

using test::MakeDirs;
using test::TempDir;

TEST(LayerWatcher, RescanAnnouncesImageAndContainerLayers) {
  TempDir root;
  MakeDirs(root / "img1/diff");
  MakeDirs(root / "ctr1/diff");
  MakeDirs(root / "ctr1-init/diff");
  MakeDirs(root / "l");
  MakeDirs(root / ".tmp/diff");
  MakeDirs(root / "nodiff");
  std::map<std::string, bool> seen;
  LayerWatcher w({root.path()}, std::chrono::seconds(600), std::chrono::milliseconds(0),
                 [&](const std::string& layer, bool writable) { seen[layer] = writable; });
  w.RescanAll();
  EXPECT_EQ(seen, (std::map<std::string, bool>{{root / "img1/diff", false}, {root / "ctr1/diff", true}}));
}

TEST(LayerWatcher, NoticesANewLayerWithoutARescan) {
  TempDir root;
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::vector<std::string> seen;
  LayerWatcher w({root.path()}, std::chrono::seconds(3600), std::chrono::milliseconds(100),
                 [&](const std::string& layer, bool) {
                   std::lock_guard<std::mutex> l(mu);
                   seen.push_back(layer);
                 });
  std::thread t([&] { w.Run(&stop); });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // the initial rescan found nothing
  MakeDirs(root / "new1/diff");
  bool found = false;
  for (int i = 0; i < 100 && !found; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    std::lock_guard<std::mutex> l(mu);
    found = !seen.empty();
  }
  stop = true;
  t.join();
  ASSERT_TRUE(found) << "no announcement within 5 s";
  EXPECT_EQ(seen[0], root / "new1/diff");
}

}  // namespace
}  // namespace cid
