import DynamicInference
import Foundation

// `dynbench exits-plot`: the reports of `dynbench exits --checkpoint … --json` side by side, as
// one JSON file and SVG plots of accuracy against cost.

let exitsPlotUsage = """
usage: dynbench exits-plot --reports R.json… --json OUT.json --svg DIR [--title TEXT]
  Merges reports of `dynbench exits --checkpoint … --json` (early-exit networks, and dense ones as
  a single exit) into OUT.json — {"title", "models": [report…], "low_budget": […]} — and draws
  into DIR: accuracy-vs-mflops.svg (budgeted curves on the test set, anytime exits, dense networks
  as points), accuracy-vs-ms-b1.svg and accuracy-vs-ms-b64.svg (the same against milliseconds per
  image at batch 1 and 64: curves of Σ share_k · t_k from the measured t_k, and the operating
  points whose deployment forward was timed, as rings). Prints each network's budgeted test
  accuracy at 10, 20, … 50 reference MFLOPs (linear between operating points): the low-budget
  comparison of the RANet paper.
"""

struct ExitsSummary: Codable {
    struct LowBudget: Codable {
        var mflops: Double
        /// Budgeted test accuracy per network at that cost; absent below its cheapest point.
        var test_acc: [String: Double]
    }
    var title: String
    var models: [ExitsReport]
    var low_budget: [LowBudget]
}

func runExitsPlot(_ argv: [String], kernels: KernelOptions) throws {
    let a = try FlagArgs(argv, switches: [], known: ["--reports", "--json", "--svg", "--title"], usage: exitsPlotUsage)
    guard let paths = a.values["--reports"] else { throw CLIError(description: "missing --reports\n\(exitsPlotUsage)") }
    let reports = try paths.map { p -> ExitsReport in
        let r = try readJSON(ExitsReport.self, from: p)
        guard r.exits.allSatisfy({ $0.test_acc != nil }) else { throw CLIError(description: "\(p) has no test accuracy (run exits with --checkpoint)") }
        return r
    }
    let title = a.string("--title") ?? "CIFAR-10"
    let budgets = stride(from: 10.0, through: 50.0, by: 10.0).map { b in
        ExitsSummary.LowBudget(mflops: b, test_acc: Dictionary(uniqueKeysWithValues: reports.compactMap { r in
            budgetedCurve(r, x: \.expected_mflops).flatMap { interpolate($0, at: b) }.map { (r.name, $0) }
        }))
    }
    print("budgeted test accuracy at a cost of (reference MFLOPs): " + budgets.map { String(format: "%.0f", $0.mflops) }.joined(separator: ", "))
    for r in reports where r.budgeted != nil {
        print(r.name.padding(toLength: 26, withPad: " ", startingAt: 0)
              + budgets.map { b in b.test_acc[r.name].map { String(format: "%7.4f", $0) } ?? "      –" }.joined(separator: " "))
    }
    let summary = ExitsSummary(title: title, models: reports, low_budget: budgets)
    if let path = a.string("--json") {
        try writeJSON(summary, to: path)
    }
    if let dir = a.string("--svg") {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let plots: [(String, String, KeyPath<ExitsReport.Point, Double>, KeyPath<ExitsReport.Exit, Double>, KeyPath<ExitsReport.Point, Double?>?)] = [
            ("accuracy-vs-mflops.svg", "expected reference MFLOPs per image", \.expected_mflops, \.mflops, nil),
            ("accuracy-vs-ms-b1.svg", "ms per image, batch 1, \(reports[0].threads) thread(s), \(reports[0].machine)",
             \.expected_ms_b1, \.ms_b1, \.ms_per_image_b1),
            ("accuracy-vs-ms-b64.svg", "ms per image, batch 64, \(reports[0].threads) thread(s), \(reports[0].machine)",
             \.expected_ms_b64, \.ms_b64, \.ms_per_image_b64),
        ]
        for (file, xLabel, curveX, exitX, timedX) in plots {
            var series: [SVGSeries] = []
            for (i, r) in reports.enumerated() {
                let color = SVGSeries.palette[i % SVGSeries.palette.count]
                if let curve = budgetedCurve(r, x: curveX) {
                    series.append(SVGSeries(label: "\(r.name) budgeted", points: curve, color: color, style: .line))
                    series.append(SVGSeries(label: "\(r.name) anytime (exits)",
                                            points: r.exits.map { ($0[keyPath: exitX], $0.test_acc! * 100) }, color: color, style: .dashedSquares))
                    if let timedX, let pts = r.budgeted {
                        let timed = pts.compactMap { p in p[keyPath: timedX].map { ($0, p.test_acc * 100) } }
                        if !timed.isEmpty { series.append(SVGSeries(label: "\(r.name) timed", points: timed, color: color, style: .rings)) }
                    }
                } else {
                    series.append(SVGSeries(label: r.name, points: r.exits.map { ($0[keyPath: exitX], $0.test_acc! * 100) },
                                            color: color, style: .diamond))
                }
            }
            let svg = svgChart(title: "\(title): test accuracy", xLabel: xLabel, yLabel: "test accuracy (%)", series: series)
            let url = URL(fileURLWithPath: dir).appendingPathComponent(file)
            try svg.write(to: url, atomically: true, encoding: .utf8)
            print("wrote \(url.path)")
        }
    }
}

/// The budgeted operating points as (cost, accuracy %) sorted by cost; nil for a dense network.
func budgetedCurve(_ r: ExitsReport, x: KeyPath<ExitsReport.Point, Double>) -> [(Double, Double)]? {
    r.budgeted.map { $0.map { ($0[keyPath: x], $0.test_acc * 100) }.sorted { $0.0 < $1.0 } }
}

/// y at x on a polyline sorted by x (accuracy as a fraction); nil outside its range.
func interpolate(_ curve: [(Double, Double)], at x: Double) -> Double? {
    guard let first = curve.first, let last = curve.last, x >= first.0, x <= last.0 else { return nil }
    for (p, q) in zip(curve, curve.dropFirst()) where x <= q.0 {
        let t = q.0 > p.0 ? (x - p.0) / (q.0 - p.0) : 1
        return (p.1 + t * (q.1 - p.1)) / 100
    }
    return last.1 / 100
}

struct SVGSeries {
    enum Style { case line, dashedSquares, rings, diamond }
    static let palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f"]
    var label: String
    var points: [(Double, Double)]
    var color: String
    var style: Style
}

/// A line chart with a legend, in plain SVG.
func svgChart(title: String, xLabel: String, yLabel: String, series: [SVGSeries]) -> String {
    let (width, height, left, right, top, bottom) = (900.0, 540.0, 70.0, 300.0, 40.0, 60.0)
    let all = series.flatMap(\.points)
    let xs = niceTicks(all.map(\.0).min() ?? 0, all.map(\.0).max() ?? 1)
    let ys = niceTicks(all.map(\.1).min() ?? 0, all.map(\.1).max() ?? 1)
    let (x0, x1, y0, y1) = (xs.first!, xs.last!, ys.first!, ys.last!)
    func px(_ x: Double) -> Double { left + (x - x0) / (x1 - x0) * (width - left - right) }
    func py(_ y: Double) -> Double { height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom) }
    func f(_ v: Double) -> String { String(format: "%.1f", v) }
    func label(_ v: Double) -> String { v == v.rounded() ? String(format: "%.0f", v) : String(format: "%g", v) }
    var s = """
    <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" font-family="sans-serif" font-size="12">
    <rect width="100%" height="100%" fill="white"/>
    <text x="\(f(left))" y="24" font-size="15">\(xmlEscaped(title))</text>

    """
    for x in xs {
        s += "<line x1=\"\(f(px(x)))\" y1=\"\(f(top))\" x2=\"\(f(px(x)))\" y2=\"\(f(height - bottom))\" stroke=\"#ddd\"/>"
        s += "<text x=\"\(f(px(x)))\" y=\"\(f(height - bottom + 16))\" text-anchor=\"middle\">\(label(x))</text>\n"
    }
    for y in ys {
        s += "<line x1=\"\(f(left))\" y1=\"\(f(py(y)))\" x2=\"\(f(width - right))\" y2=\"\(f(py(y)))\" stroke=\"#ddd\"/>"
        s += "<text x=\"\(f(left - 6))\" y=\"\(f(py(y) + 4))\" text-anchor=\"end\">\(label(y))</text>\n"
    }
    s += "<rect x=\"\(f(left))\" y=\"\(f(top))\" width=\"\(f(width - left - right))\" height=\"\(f(height - top - bottom))\" fill=\"none\" stroke=\"#444\"/>\n"
    s += "<text x=\"\(f((left + width - right) / 2))\" y=\"\(f(height - 16))\" text-anchor=\"middle\">\(xmlEscaped(xLabel))</text>\n"
    s += "<text transform=\"translate(18 \(f((top + height - bottom) / 2))) rotate(-90)\" text-anchor=\"middle\">\(xmlEscaped(yLabel))</text>\n"
    func marker(_ style: SVGSeries.Style, _ x: Double, _ y: Double, _ c: String) -> String {
        switch style {
        case .line: return "<circle cx=\"\(f(x))\" cy=\"\(f(y))\" r=\"2\" fill=\"\(c)\"/>"
        case .dashedSquares: return "<rect x=\"\(f(x - 3.5))\" y=\"\(f(y - 3.5))\" width=\"7\" height=\"7\" fill=\"\(c)\"/>"
        case .rings: return "<circle cx=\"\(f(x))\" cy=\"\(f(y))\" r=\"6\" fill=\"none\" stroke=\"\(c)\" stroke-width=\"1.5\"/>"
        case .diamond: return "<path d=\"M\(f(x)) \(f(y - 7))L\(f(x + 7)) \(f(y))L\(f(x)) \(f(y + 7))L\(f(x - 7)) \(f(y))Z\" fill=\"\(c)\"/>"
        }
    }
    for (i, sr) in series.enumerated() {
        let pts = sr.points.map { (px($0.0), py($0.1)) }
        if sr.style == .line || sr.style == .dashedSquares, pts.count > 1 {
            let dash = sr.style == .dashedSquares ? " stroke-dasharray=\"5 4\"" : ""
            s += "<polyline fill=\"none\" stroke=\"\(sr.color)\" stroke-width=\"1.8\"\(dash) points=\""
                + pts.map { "\(f($0.0)),\(f($0.1))" }.joined(separator: " ") + "\"/>\n"
        }
        s += pts.map { marker(sr.style, $0.0, $0.1, sr.color) }.joined() + "\n"
        let ly = top + 10 + Double(i) * 20, lx = width - right + 16
        if sr.style == .line || sr.style == .dashedSquares {
            let dash = sr.style == .dashedSquares ? " stroke-dasharray=\"5 4\"" : ""
            s += "<line x1=\"\(f(lx))\" y1=\"\(f(ly))\" x2=\"\(f(lx + 24))\" y2=\"\(f(ly))\" stroke=\"\(sr.color)\" stroke-width=\"1.8\"\(dash)/>"
        }
        s += marker(sr.style, lx + 12, ly, sr.color)
        s += "<text x=\"\(f(lx + 32))\" y=\"\(f(ly + 4))\">\(xmlEscaped(sr.label))</text>\n"
    }
    return s + "</svg>\n"
}

/// Round tick values covering [lo, hi]: steps of 1, 2 or 5 × 10^k, about six of them.
func niceTicks(_ lo: Double, _ hi: Double) -> [Double] {
    let span = Swift.max(hi - lo, 1e-9)
    let raw = span / 6, mag = pow(10, floor(log10(raw)))
    let step = [1.0, 2, 5, 10].map { $0 * mag }.first { $0 >= raw } ?? 10 * mag
    let start = floor(lo / step) * step, end = ceil(hi / step) * step
    return stride(from: start, through: end + step / 2, by: step).map { $0 }
}

func xmlEscaped(_ s: String) -> String {
    s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
}
