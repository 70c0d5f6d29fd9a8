"""One-off: convert fuel-specs sparse_merkle_tree YAML vectors to one JSON file."""
import glob, json, os, sys

def parse(text):
    out = {}
    step = sub = None
    for line in text.splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        body = line.strip()
        if body.startswith("- "):
            step = {}
            out["steps"].append(step)
            body, indent = body[2:], indent + 2
        key, _, value = body.partition(":")
        value = value.strip()
        if value.startswith('"'):
            value = json.loads(value)
        if indent == 0:
            step = None
            if key == "steps":
                out["steps"] = []
                if value not in ("", "[]"):
                    raise ValueError(value)
            elif value == "":
                sub = out.setdefault(key, {})
            else:
                out[key] = value
        elif step is not None and indent == 2:
            if value == "":
                sub = step.setdefault(key, {})
            else:
                step[key] = value
        else:
            sub[key] = value
    return out

src, dst = sys.argv[1], sys.argv[2]
cases = []
for path in sorted(glob.glob(os.path.join(src, "*.yaml"))):
    case = parse(open(path).read())
    case["file"] = os.path.basename(path)
    cases.append(case)
json.dump({"source": "FuelLabs/fuel-specs@64bfa19477d80ce8c7f23b3b1841cebdb4c9c44a test_vectors/sparse_merkle_tree/*.yaml",
           "cases": cases}, open(dst, "w"), indent=1, sort_keys=True)
