// Validates the custom resources of deploy/ (Argo Rollouts Rollout and AnalysisTemplate,
// Prometheus Operator PodMonitor and PrometheusRule) offline, in two ways:
//  1. the JSON schemas of the CRDs, compiled into @kubernetes-models/* (types, enums,
//     required fields, patterns);
//  2. strictly: every field must be one the CRD declares. The compiled schemas accept
//     unknown fields, and the API server prunes them silently, so a misspelled
//     `successCondtion` would turn a gate into one that always passes. The declared
//     fields are read from the packages' TypeScript declarations.
// Usage: node deploy_validate_crds.mjs FILE.yaml...   (run from the install directory)
import fs from "node:fs";
import path from "node:path";
import YAML from "yaml";
import * as argo from "@kubernetes-models/argo-rollouts/argoproj.io/v1alpha1";
import * as monitoring from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

// The packages are installed next to this script (scripts/validate-deploy.sh).
const NODE_MODULES = path.join(path.dirname(new URL(import.meta.url).pathname), "node_modules");
const MODELS = {
  "argoproj.io/v1alpha1": {
    mod: argo,
    dir: "@kubernetes-models/argo-rollouts/argoproj.io/v1alpha1",
  },
  "monitoring.coreos.com/v1": {
    mod: monitoring,
    dir: "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1",
  },
};

function pkgFile(spec) {
  // "@scope/pkg/sub/path" or "pkg/sub/path" -> absolute .d.ts path.
  const parts = spec.split("/");
  const n = spec.startsWith("@") ? 2 : 1;
  return path.join(NODE_MODULES, ...parts) + ".d.ts";
}

const cache = new Map();
// Parses one declaration file: its imports (name -> file), its type aliases exported
// under other names, and each interface's members (name -> type text).
function parseDts(file) {
  if (cache.has(file)) return cache.get(file);
  const src = fs.readFileSync(file, "utf8").replace(/\/\*[\s\S]*?\*\//g, "");
  const imports = new Map();
  for (const m of src.matchAll(/import\s*\{([^}]*)\}\s*from\s*"([^"]+)"/g)) {
    const target = m[2].startsWith(".")
      ? path.join(path.dirname(file), m[2].replace(/\.js$/, "") + ".d.ts")
      : pkgFile(m[2]);
    for (const name of m[1].split(",").map((s) => s.trim()).filter(Boolean)) {
      const [orig, alias] = name.split(/\s+as\s+/);
      imports.set((alias || orig).trim(), { file: target, name: orig.trim() });
    }
  }
  const aliases = new Map();
  for (const m of src.matchAll(/export type \{([^}]*)\}/g)) {
    for (const part of m[1].split(",")) {
      const [orig, alias] = part.trim().split(/\s+as\s+/);
      if (alias) aliases.set(alias.trim(), orig.trim());
    }
  }
  const interfaces = new Map();
  for (const m of src.matchAll(/export interface (\w+)[^{]*\{/g)) {
    let i = m.index + m[0].length;
    let depth = 1;
    const start = i;
    while (depth > 0) {
      if (src[i] === "{") depth++;
      else if (src[i] === "}") depth--;
      i++;
    }
    const body = src.slice(start, i - 1);
    const members = new Map();
    // Members at depth 0 of the body: "name"?: TYPE;
    let j = 0;
    while (j < body.length) {
      const mm = /^\s*"([^"]+)"\??\s*:\s*/.exec(body.slice(j));
      if (!mm) break;
      j += mm[0].length;
      let d = 0;
      let k = j;
      while (k < body.length && !(d === 0 && body[k] === ";")) {
        if ("{<(".includes(body[k])) d++;
        else if ("}>)".includes(body[k])) d--;
        k++;
      }
      members.set(mm[1], body.slice(j, k).trim());
      j = k + 1;
    }
    interfaces.set(m[1], members);
  }
  const parsed = { file, imports, aliases, interfaces };
  cache.set(file, parsed);
  return parsed;
}

// Resolves a type name used in `ctx` to [declaration, interface members] or null.
function resolve(ctx, name) {
  let decl = ctx;
  let n = name;
  if (!decl.interfaces.has(n) && !decl.aliases.has(n)) {
    const imp = ctx.imports.get(n);
    if (!imp) return null;
    decl = parseDts(imp.file);
    n = imp.name;
  }
  if (decl.aliases.has(n)) n = decl.aliases.get(n);
  const members = decl.interfaces.get(n);
  return members ? [decl, members] : null;
}

function walk(value, type, ctx, where, errors) {
  type = type.trim();
  if (value === null || value === undefined) return;
  let m;
  if ((m = /^Array<(.*)>$/s.exec(type)) || (m = /^(\w+)\[\]$/.exec(type))) {
    if (Array.isArray(value)) value.forEach((v, i) => walk(v, m[1], ctx, `${where}[${i}]`, errors));
    return;
  }
  if ((m = /^\{\s*\[key: string\]:\s*(.*?);?\s*\}$/s.exec(type))) {
    if (typeof value === "object") for (const [k, v] of Object.entries(value)) walk(v, m[1], ctx, `${where}.${k}`, errors);
    return;
  }
  if (!/^\w+$/.test(type)) return; // unions, literals, primitives
  const r = resolve(ctx, type);
  if (!r || typeof value !== "object" || Array.isArray(value)) return;
  const [decl, members] = r;
  for (const [k, v] of Object.entries(value)) {
    if (!members.has(k)) {
      errors.push(`${where}.${k}: unknown field (known: ${[...members.keys()].join(", ")})`);
    } else {
      walk(v, members.get(k), decl, `${where}.${k}`, errors);
    }
  }
}

let failed = 0;
let checked = 0;
for (const file of process.argv.slice(2)) {
  const docs = YAML.parseAllDocuments(fs.readFileSync(file, "utf8"));
  docs.forEach((d, idx) => {
    const obj = d.toJS();
    if (!obj) return;
    const group = MODELS[obj.apiVersion];
    if (!group) return;
    const Model = group.mod[obj.kind];
    const where = `${file}#${idx} ${obj.kind}/${obj.metadata?.name}`;
    if (!Model) {
      console.error(`FAIL ${where}: no schema for ${obj.apiVersion} ${obj.kind}`);
      failed++;
      return;
    }
    const errors = [];
    try {
      new Model(obj).validate();
    } catch (e) {
      errors.push(`schema: ${e.message}`);
    }
    const top = parseDts(pkgFile(`${group.dir}/${obj.kind}`));
    walk(obj, `I${obj.kind}`, top, obj.kind, errors);
    checked++;
    if (errors.length) {
      failed++;
      for (const e of errors) console.error(`FAIL ${where}: ${e}`);
    } else {
      console.log(`ok   ${where}`);
    }
  });
}
console.log(`${checked} custom resources checked, ${failed} failed`);
process.exit(failed ? 1 : 0);
