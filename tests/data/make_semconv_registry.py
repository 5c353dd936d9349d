"""Regenerate tests/data/semconv_registry.json: the registry entries otel_crm relies on, and nothing else.

    python tests/data/make_semconv_registry.py /path/to/semantic-conventions v1.44.0

reads the model YAML of the core repository at that tag (a git checkout; `git show`, so the work
tree may be anywhere) and keeps, for each name in NAMES: its kind, type, stability, deprecation and,
for the enums listed in ENUMS, the member values. GenAI moved to its own repository
(open-telemetry/semantic-conventions-genai) in May 2026; its entries are transcribed in GENAI from
the files named there, with their commits. Never commit the registry itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

__all__ = ["GENAI", "NAMES", "main"]

OUT = Path(__file__).with_name("semconv_registry.json")

# Attributes and metrics otel_crm writes or rewrites (semconv.py, the helpers, corrections.py), plus the
# deprecated names the corrections remove, so a test can prove they are deprecated upstream.
NAMES = [
    # resource
    "service.name", "service.version", "service.namespace", "service.instance.id",
    "deployment.environment.name", "telemetry.distro.name", "telemetry.distro.version",
    "telemetry.sdk.name", "telemetry.sdk.language", "telemetry.sdk.version", "host.name", "host.arch",
    "os.type", "process.pid", "process.runtime.name", "process.runtime.version", "process.executable.name",
    # spans
    "error.type", "code.function.name", "http.request.method", "http.response.status_code", "http.route",
    "url.path", "url.full", "url.query", "server.address", "server.port", "service.peer.name", "user.id",
    "db.system.name", "db.namespace", "db.operation.name", "db.collection.name", "db.query.text",
    "db.query.summary", "db.stored_procedure.name",
    "db.response.returned_rows", "exception.type", "exception.message", "exception.stacktrace",
    "exception.escaped",
    "db.client.connection.state", "db.client.connection.pool.name",
    "db.client.connections.state", "db.client.connections.pool.name", "db.operation.batch.size",
    # deprecated names otel_crm only reads (older instrumentations, OTEL_RESOURCE_ATTRIBUTES), never writes
    "net.peer.name", "http.host", "http.url", "deployment.environment",
    # metrics
    "http.server.request.duration", "http.client.request.duration", "db.client.operation.duration",
    "db.client.connection.count", "db.client.connections.usage",
]
ENUMS = {"host.arch", "db.client.connection.state", "http.request.method", "error.type"}

GENAI_SOURCE = {
    "repository": "open-telemetry/semantic-conventions-genai",
    "files": {"model/gen-ai/registry.yaml": "002c8a6ea1c8a42b14a4527db83b3cabcded610a",
              "model/gen-ai/metrics.yaml": "004902b8cb70aa5ae6ca4ae07132b7daabcd3e10"},
}
GENAI: dict[str, dict[str, Any]] = {
    "gen_ai.operation.name": {"kind": "attribute", "type": "enum", "stability": "development",
                              "members": ["chat", "create_agent", "create_memory", "create_memory_store",
                                          "delete_memory", "delete_memory_store", "embeddings",
                                          "execute_tool", "generate_content", "invoke_agent",
                                          "invoke_workflow", "plan", "retrieval", "search_memory",
                                          "text_completion", "update_memory", "upsert_memory"]},
    "gen_ai.provider.name": {"kind": "attribute", "type": "enum", "stability": "development",
                             "members": ["anthropic", "aws.bedrock", "azure.ai.inference", "azure.ai.openai",
                                         "cohere", "deepseek", "gcp.gemini", "gcp.gen_ai", "gcp.vertex_ai",
                                         "groq", "ibm.watsonx.ai", "mistral_ai", "moonshot_ai", "openai",
                                         "perplexity", "x_ai"]},
    "gen_ai.request.model": {"kind": "attribute", "type": "string", "stability": "development"},
    "gen_ai.response.model": {"kind": "attribute", "type": "string", "stability": "development"},
    "gen_ai.usage.input_tokens": {"kind": "attribute", "type": "int", "stability": "development"},
    "gen_ai.usage.output_tokens": {"kind": "attribute", "type": "int", "stability": "development"},
    "gen_ai.token.type": {"kind": "attribute", "type": "enum", "stability": "development",
                          "members": ["input", "output"]},
    "gen_ai.agent.id": {"kind": "attribute", "type": "string", "stability": "development"},
    "gen_ai.agent.name": {"kind": "attribute", "type": "string", "stability": "development"},
    "gen_ai.input.messages": {"kind": "attribute", "type": "any", "stability": "development"},
    "gen_ai.output.messages": {"kind": "attribute", "type": "any", "stability": "development"},
    "gen_ai.client.operation.duration": {"kind": "metric", "instrument": "histogram", "unit": "s",
                                         "stability": "development"},
    "gen_ai.client.token.usage": {"kind": "metric", "instrument": "histogram", "unit": "{token}",
                                  "stability": "development"},
}


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout


def _entries(repo: Path, tag: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in _git(repo, "ls-tree", "-r", "--name-only", tag, "model").split():
        if not path.endswith(".yaml"):
            continue
        document = yaml.safe_load(_git(repo, "show", f"{tag}:{path}")) or {}
        # Two file formats live side by side: `groups` of `id`s, and definition/2 with top-level
        # `attributes` (`key`) and `metrics` (`name`).
        for group in document.get("groups") or []:
            if group.get("type") == "metric" and group.get("metric_name") in NAMES:
                found[group["metric_name"]] = _entry(group, "metric", path)
            for attribute in group.get("attributes") or []:
                if attribute.get("id") in NAMES:
                    found[attribute["id"]] = _entry(attribute, "attribute", path)
        for attribute in document.get("attributes") or []:
            if attribute.get("key") in NAMES:
                found[attribute["key"]] = _entry(attribute, "attribute", path)
        for metric in document.get("metrics") or []:
            if metric.get("name") in NAMES:
                found[metric["name"]] = _entry(metric, "metric", path)
    return found


def _entry(node: dict[str, Any], kind: str, path: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"kind": kind, "stability": node.get("stability"), "file": path}
    if kind == "metric":
        entry["instrument"] = node.get("instrument")
        entry["unit"] = node.get("unit")
    else:
        type_ = node.get("type")
        entry["type"] = "enum" if isinstance(type_, dict) else type_
        if isinstance(type_, dict) and (node.get("id") or node.get("key")) in ENUMS:
            entry["members"] = sorted(str(m["value"]) for m in type_.get("members", []))
    deprecated = node.get("deprecated")
    if deprecated:
        entry["deprecated"] = {k: v for k, v in deprecated.items() if k in ("reason", "renamed_to")}
    return entry


def main(argv: list[str]) -> int:
    repo, tag = Path(argv[1]), argv[2]
    entries = _entries(repo, tag)
    missing = sorted(set(NAMES) - set(entries))
    if missing:
        print(f"not in the registry at {tag}: {missing}", file=sys.stderr)
        return 1
    document = {
        "source": {"repository": "open-telemetry/semantic-conventions", "tag": tag,
                   "commit": _git(repo, "rev-parse", f"{tag}^{{commit}}").strip()},
        "genai_source": GENAI_SOURCE,
        "names": {**dict(sorted(entries.items())), **GENAI},
    }
    OUT.write_text(json.dumps(document, indent=1, sort_keys=False) + "\n")
    print(f"wrote {OUT} ({len(document['names'])} names)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
