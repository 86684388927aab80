import DynamicInference
import Foundation

/// `dynbench compare PEER.json OURS.json`: rows matched on (model, threads, batch); the ratio is
/// our throughput over the peer's (> 1 means we are faster). Geometric means per group.
func runCompare(_ paths: [String], _: KernelOptions) throws {
    struct CompareError: Error, CustomStringConvertible { var description: String }
    guard paths.count == 2 else { throw CompareError(description: "compare needs two JSON files: PEER.json OURS.json") }
    func load(_ p: String) throws -> [ResultRow] {
        let data = try Data(contentsOf: URL(fileURLWithPath: p))
        // Peers write extra fields; decode only the shared schema.
        guard let obj = try JSONSerialization.jsonObject(with: data) as? [String: Any],
              let rows = obj["results"] as? [[String: Any]] else {
            throw CompareError(description: "\(p): not a results file ({\"info\", \"results\": [...]})")
        }
        return rows.compactMap { r in
            guard let m = r["model"] as? String, let t = r["threads"] as? Int, let b = r["batch"] as? Int,
                  let med = r["median_ms"] as? Double, let ips = r["img_per_s"] as? Double else { return nil }
            return ResultRow(framework: r["framework"] as? String ?? "?", model: m, threads: t, batch: b,
                             flops_per_image: r["flops_per_image"] as? Double ?? 0, median_ms: med,
                             min_ms: r["min_ms"] as? Double ?? med, max_ms: r["max_ms"] as? Double ?? med,
                             img_per_s: ips, gflops: r["gflops"] as? Double ?? 0)
        }
    }
    let peer = try load(paths[0]), ours = try load(paths[1])
    let peerName = peer.first?.framework ?? "peer", ourName = ours.first?.framework ?? "ours"
    print("| case | threads | batch | \(peerName) median ms | \(ourName) median ms | \(peerName) GFLOP/s | \(ourName) GFLOP/s | speed ratio |")
    print("|---|---|---|---|---|---|---|---|")
    var ratios: [String: [Double]] = [:]
    for o in ours {
        guard let p = peer.first(where: { $0.model == o.model && $0.threads == o.threads && $0.batch == o.batch }) else { continue }
        let ratio = o.img_per_s / p.img_per_s
        ratios[o.model.hasPrefix("conv") ? "conv" : "model", default: []].append(ratio)
        print(String(format: "| %@ | %d | %d | %.3f | %.3f | %.1f | %.1f | **%.2f×** |", o.model as NSString, o.threads,
                     o.batch, p.median_ms, o.median_ms, p.gflops, o.gflops, ratio))
    }
    for (group, r) in ratios.sorted(by: { $0.key < $1.key }) {
        let geo = exp(r.map { log($0) }.reduce(0, +) / Double(r.count))
        print(String(format: "geometric mean (%@ cases, %d rows): %.3f×, min %.3f×", group as NSString, r.count, geo, r.min()!))
    }
}
