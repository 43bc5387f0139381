// Checks Prometheus Operator resources (ServiceMonitor, monitoring.coreos.com/v1) against the
// operator's CRD schema as @kubernetes-models/prometheus-operator ships it (its validate()).
//
//   node servicemonitor_check.js < docs.json
//
// stdin: a JSON array of documents. stdout: one JSON array, per document {"kind", "name",
// "errors": [...]}; exit 0 (2 when stdin is not a JSON array). NODE_PATH must reach the
// package (deploy_check.py installs it into build/deploy-node/node_modules).
"use strict";

const KINDS = {
  "monitoring.coreos.com/v1/ServiceMonitor":
    "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor",
};

let input = "";
process.stdin.on("data", (d) => (input += d));
process.stdin.on("end", () => {
  let docs;
  try {
    docs = JSON.parse(input);
    if (!Array.isArray(docs)) throw new Error("not an array");
  } catch (e) {
    console.error(`servicemonitor_check: stdin: ${e.message}`);
    process.exit(2);
  }
  const out = docs.map((doc) => {
    const key = `${doc.apiVersion}/${doc.kind}`;
    const res = { kind: doc.kind, name: (doc.metadata || {}).name, errors: [] };
    if (!KINDS[key]) {
      res.errors.push(`no schema for ${key}`);
      return res;
    }
    const Model = require(KINDS[key])[doc.kind];
    try {
      new Model(doc).validate();
    } catch (e) {
      const details = (e.errors || []).map(
        (x) => `${x.instancePath || x.dataPath || "/"} ${x.message}` +
          (x.params && x.params.additionalProperty ? ` (${x.params.additionalProperty})` : ""));
      res.errors.push(details.length ? details.join("; ") : String(e.message || e));
    }
    return res;
  });
  process.stdout.write(JSON.stringify(out) + "\n");
});
