"""Print the execution time of each code cell stored in executed notebooks (nbclient's timestamps)."""
import datetime
import json
import sys


def _t(s):
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))


for path in sys.argv[1:]:
    total = 0.0
    for c in json.load(open(path))["cells"]:
        e = c.get("metadata", {}).get("execution", {})
        if c["cell_type"] == "code" and "iopub.execute_input" in e and "shell.execute_reply" in e:
            dt = (_t(e["shell.execute_reply"]) - _t(e["iopub.execute_input"])).total_seconds()
            total += dt
            src = "".join(c["source"])[:60].replace("\n", " ")
            print(f"{dt:7.1f} s  {src}")
    print(f"{total:7.1f} s  total: {path}")
