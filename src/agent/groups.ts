// Group names for --allow-group: Node has no getgrnam, and /etc/group is what NSS reads for local groups.
import { readFileSync } from "node:fs";

export function getgrnam(name: string, groupFile = "/etc/group"): number | undefined {
  let text: string;
  try {
    text = readFileSync(groupFile, "utf8");
  } catch {
    return undefined;
  }
  for (const line of text.split("\n")) {
    const [group, , gid] = line.split(":");
    if (group === name && gid !== undefined && /^\d+$/.test(gid)) return Number(gid);
  }
  return undefined;
}
