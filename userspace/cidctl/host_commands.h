// cidctl commands that talk to cidd or undo what the container hooks did.
// Each parses its own options (and --help); cidctl.cc only lists them.
#ifndef CID_CIDCTL_HOST_COMMANDS_H_
#define CID_CIDCTL_HOST_COMMANDS_H_

#include <cstdint>
#include <string>

namespace cid {

// "123 B", "4.5 MiB": sizes for people.
std::string HumanBytes(uint64_t n);

int CmdUnlinkDups(int argc, char** argv);  // undo --hardlink (the journal)
int CmdMetrics(int argc, char** argv);     // cidd's Prometheus text
int CmdTop(int argc, char** argv);         // savings per container and layer

}  // namespace cid

#endif  // CID_CIDCTL_HOST_COMMANDS_H_
