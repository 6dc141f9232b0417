//! Exact optimal transport between two sets of units with uniform marginals, by the
//! transportation (network) simplex.
//!
//! Written in repflow because no maintained Rust crate solves exact OT with real-valued
//! costs (see the README). The problem
//! $\min_P \langle P, C\rangle$ subject to $P\mathbf 1 = \mathbf 1/n_x$, $P^\top \mathbf 1 = \mathbf 1/n_y$, $P \ge 0$
//! is solved on integer supplies $n_y/g$ and demands $n_x/g$ ($g = \gcd(n_x, n_y)$), which
//! are then perturbed (Orden–Charnes: every supply $+1$, the last demand $+n_x$, after
//! scaling by $n_x + 1$) so that no basis is degenerate and the simplex cannot cycle. The
//! optimal basis of the perturbed problem is optimal for the original one, whose flows are
//! then recomputed exactly on that basis tree.
//!
//! The basis is a spanning tree over the $n_x + n_y$ nodes (sources first), stored with
//! parent pointers, depths, child lists, the flow on each node's parent arc, and node
//! potentials $u_i + v_j = C_{ij}$ on tree arcs. Entering arcs are priced by block search.

use faer::MatRef;

use crate::KernelError;

/// An optimal transport plan: its non-zero entries and its cost.
#[derive(Clone, Debug)]
pub struct Plan {
    /// `(i, j, P_ij)` for every arc of the optimal basis with positive mass.
    pub entries: Vec<(usize, usize, f64)>,
    /// `⟨P, C⟩`.
    pub cost: f64,
}

const NONE: usize = usize::MAX;

struct Tree<'c> {
    cost: MatRef<'c, f64>,
    nx: usize,
    parent: Vec<usize>,
    depth: Vec<usize>,
    children: Vec<Vec<usize>>,
    flow: Vec<i64>,
    pot: Vec<f64>,
}

impl Tree<'_> {
    /// Cost of the arc between node `a` and node `b` (one source, one sink).
    fn arc_cost(&self, a: usize, b: usize) -> f64 {
        let (s, t) = if a < self.nx { (a, b) } else { (b, a) };
        self.cost[(s, t - self.nx)]
    }

    /// Sets depth and potential of the subtree rooted at `root` from its parent.
    fn refresh_subtree(&mut self, root: usize) {
        let mut stack = vec![root];
        while let Some(v) = stack.pop() {
            let p = self.parent[v];
            self.depth[v] = self.depth[p] + 1;
            self.pot[v] = self.arc_cost(v, p) - self.pot[p];
            stack.extend_from_slice(&self.children[v]);
        }
    }

    fn remove_child(&mut self, parent: usize, child: usize) {
        let list = &mut self.children[parent];
        let pos = list
            .iter()
            .position(|&c| c == child)
            .expect("child is listed under its parent");
        list.swap_remove(pos);
    }
}

/// Greatest common divisor.
fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Solves exact OT between `n_x` sources of mass `1/n_x` and `n_y` sinks of mass `1/n_y`
/// with cost matrix `cost` (n_x × n_y, finite).
///
/// Equal widths are an assignment problem: the feasible plans are the doubly stochastic
/// matrices over n (Birkhoff–von Neumann), whose vertices are the permutation matrices, and
/// a linear objective attains its minimum at a vertex; so an exact assignment (the
/// permutation metric's solver) is an optimal plan, found in O(n³) instead of the simplex's
/// many pivots (at n = 1,024 the simplex was most of soft matching's time). Unequal widths
/// go through the transportation simplex.
pub fn uniform_transport(cost: MatRef<'_, f64>) -> Result<Plan, KernelError> {
    let (nx, ny) = cost.shape();
    if nx == 0 || ny == 0 {
        return Err(KernelError::Invalid(
            "transport between empty sets of units".into(),
        ));
    }
    if nx == ny {
        return square_transport(cost);
    }
    simplex_transport(cost)
}

/// The exact assignment of rows to columns of `m` (one pair per row of the smaller side)
/// minimising, or when `maximize` maximising, the sum of the chosen entries.
pub(crate) fn assignment(
    m: MatRef<'_, f64>,
    maximize: bool,
) -> Result<Vec<(usize, usize)>, KernelError> {
    let (nr, nc) = m.shape();
    let flat: Vec<f64> = (0..nr)
        .flat_map(|i| (0..nc).map(move |j| m[(i, j)]))
        .collect();
    let (rows, cols) = lsap::solve(nr, nc, &flat, maximize)
        .map_err(|e| KernelError::Numerical(format!("linear assignment failed: {e:?}")))?;
    Ok(rows.into_iter().zip(cols).collect())
}

/// Equal widths: the optimal plan as an exact assignment, mass `1/n` on each matched pair.
fn square_transport(cost: MatRef<'_, f64>) -> Result<Plan, KernelError> {
    let mass = 1.0 / cost.nrows() as f64;
    let entries: Vec<(usize, usize, f64)> = assignment(cost, false)?
        .into_iter()
        .map(|(i, j)| (i, j, mass))
        .collect();
    let cost = entries.iter().map(|&(i, j, p)| p * cost[(i, j)]).sum();
    Ok(Plan { entries, cost })
}

/// Any widths: the transportation simplex described at the top of this file.
fn simplex_transport(cost: MatRef<'_, f64>) -> Result<Plan, KernelError> {
    let (nx, ny) = cost.shape();
    let n_nodes = nx + ny;
    let g = gcd(nx, ny);
    let k = (nx + 1) as i64;
    let supply: Vec<i64> = (0..nx).map(|_| (ny / g) as i64 * k + 1).collect();
    let mut demand: Vec<i64> = (0..ny).map(|_| (nx / g) as i64 * k).collect();
    demand[ny - 1] += nx as i64;

    let arcs = initial_basis(cost, &supply, &demand);
    let mut tree = build_tree(cost, nx, n_nodes, &arcs)?;

    let max_abs = cost
        .col_iter()
        .flat_map(|c| c.iter().map(|v| v.abs()).collect::<Vec<_>>())
        .fold(0.0f64, f64::max);
    let eps = 1e-12 * max_abs.max(1.0);
    let n_arcs = nx * ny;
    let block = ((n_arcs as f64).sqrt() as usize).max(16).min(n_arcs);
    let mut next = 0usize;
    let max_pivots = 100 * n_arcs + 1_000_000;
    let mut pivots = 0usize;
    loop {
        // Block search for an entering arc with negative reduced cost.
        let mut best = NONE;
        let mut best_rc = -eps;
        let mut scanned = 0;
        while scanned < n_arcs {
            let end = (scanned + block).min(n_arcs);
            for _ in scanned..end {
                let (i, j) = (next / ny, next % ny);
                let rc = cost[(i, j)] - tree.pot[i] - tree.pot[nx + j];
                if rc < best_rc {
                    best_rc = rc;
                    best = next;
                }
                next += 1;
                if next == n_arcs {
                    next = 0;
                }
            }
            scanned = end;
            if best != NONE {
                break;
            }
        }
        if best == NONE {
            break;
        }
        pivots += 1;
        if pivots > max_pivots {
            return Err(KernelError::Numerical(format!(
                "network simplex did not converge in {max_pivots} pivots"
            )));
        }
        pivot(&mut tree, best / ny, nx + best % ny);
    }
    Ok(exact_plan(&tree, nx, ny))
}

/// A feasible spanning-tree basis by the matrix-minimum rule (cheapest cells first).
fn initial_basis(
    cost: MatRef<'_, f64>,
    supply: &[i64],
    demand: &[i64],
) -> Vec<(usize, usize, i64)> {
    let (nx, ny) = cost.shape();
    let mut order: Vec<usize> = (0..nx * ny).collect();
    order.sort_unstable_by(|&a, &b| {
        cost[(a / ny, a % ny)]
            .total_cmp(&cost[(b / ny, b % ny)])
            .then(a.cmp(&b))
    });
    let mut s = supply.to_vec();
    let mut d = demand.to_vec();
    let mut arcs = Vec::with_capacity(nx + ny - 1);
    for idx in order {
        let (i, j) = (idx / ny, idx % ny);
        if s[i] == 0 || d[j] == 0 {
            continue;
        }
        let f = s[i].min(d[j]);
        s[i] -= f;
        d[j] -= f;
        arcs.push((i, j, f));
        if arcs.len() == nx + ny - 1 {
            break;
        }
    }
    arcs
}

/// Roots the basis arcs at node 0 and computes depths and potentials.
fn build_tree<'c>(
    cost: MatRef<'c, f64>,
    nx: usize,
    n_nodes: usize,
    arcs: &[(usize, usize, i64)],
) -> Result<Tree<'c>, KernelError> {
    let mut adj: Vec<Vec<(usize, i64)>> = vec![Vec::new(); n_nodes];
    for &(i, j, f) in arcs {
        adj[i].push((nx + j, f));
        adj[nx + j].push((i, f));
    }
    let mut tree = Tree {
        cost,
        nx,
        parent: vec![NONE; n_nodes],
        depth: vec![0; n_nodes],
        children: vec![Vec::new(); n_nodes],
        flow: vec![0; n_nodes],
        pot: vec![0.0; n_nodes],
    };
    let mut seen = vec![false; n_nodes];
    seen[0] = true;
    let mut queue = std::collections::VecDeque::from([0usize]);
    let mut reached = 1;
    while let Some(v) = queue.pop_front() {
        for &(w, f) in &adj[v] {
            if !seen[w] {
                seen[w] = true;
                reached += 1;
                tree.parent[w] = v;
                tree.flow[w] = f;
                tree.depth[w] = tree.depth[v] + 1;
                tree.pot[w] = tree.arc_cost(w, v) - tree.pot[v];
                tree.children[v].push(w);
                queue.push_back(w);
            }
        }
    }
    if reached != n_nodes {
        return Err(KernelError::Numerical(
            "initial transport basis is not a spanning tree".into(),
        ));
    }
    Ok(tree)
}

/// Brings arc (p, q) (source p, sink node q) into the basis.
fn pivot(tree: &mut Tree<'_>, p: usize, q: usize) {
    let nx = tree.nx;
    // Paths from p and q up to their lowest common ancestor.
    let (mut a, mut b) = (p, q);
    let mut path_p = Vec::new();
    let mut path_q = Vec::new();
    while tree.depth[a] > tree.depth[b] {
        path_p.push(a);
        a = tree.parent[a];
    }
    while tree.depth[b] > tree.depth[a] {
        path_q.push(b);
        b = tree.parent[b];
    }
    while a != b {
        path_p.push(a);
        a = tree.parent[a];
        path_q.push(b);
        b = tree.parent[b];
    }
    // Pushing θ along p→q: q's side loses flow on arcs hanging from sinks, p's side on
    // arcs hanging from sources.
    let decreases = |v: usize, on_q_side: bool| (v >= nx) == on_q_side;
    let mut theta = i64::MAX;
    let mut leaving = NONE;
    let mut leaving_on_q = false;
    for (path, on_q) in [(&path_p, false), (&path_q, true)] {
        for &v in path.iter() {
            if decreases(v, on_q) && tree.flow[v] < theta {
                theta = tree.flow[v];
                leaving = v;
                leaving_on_q = on_q;
            }
        }
    }
    for (path, on_q) in [(&path_p, false), (&path_q, true)] {
        for &v in path.iter() {
            if decreases(v, on_q) {
                tree.flow[v] -= theta;
            } else {
                tree.flow[v] += theta;
            }
        }
    }
    // Re-hang the cut subtree: x is the entering arc's endpoint below the leaving arc.
    let (x, y, path) = if leaving_on_q {
        (q, p, &path_q)
    } else {
        (p, q, &path_p)
    };
    let stop = path
        .iter()
        .position(|&v| v == leaving)
        .expect("leaving arc lies on the cycle");
    let chain: Vec<usize> = path[..=stop].to_vec();
    let old_flows: Vec<i64> = chain.iter().map(|&v| tree.flow[v]).collect();
    let top_parent = tree.parent[leaving];
    tree.remove_child(top_parent, leaving);
    for t in 1..chain.len() {
        let (below, above) = (chain[t - 1], chain[t]);
        tree.remove_child(above, below);
        tree.parent[above] = below;
        tree.flow[above] = old_flows[t - 1];
        tree.children[below].push(above);
    }
    tree.parent[x] = y;
    tree.flow[x] = theta;
    tree.children[y].push(x);
    tree.refresh_subtree(x);
}

/// Flows of the optimal basis for the unperturbed marginals `1/n_x`, `1/n_y`.
fn exact_plan(tree: &Tree<'_>, nx: usize, ny: usize) -> Plan {
    let n_nodes = nx + ny;
    let mut order = Vec::with_capacity(n_nodes);
    order.push(0);
    let mut head = 0;
    while head < order.len() {
        let v = order[head];
        head += 1;
        order.extend_from_slice(&tree.children[v]);
    }
    let mut net: Vec<f64> = (0..n_nodes)
        .map(|v| {
            if v < nx {
                1.0 / nx as f64
            } else {
                -1.0 / ny as f64
            }
        })
        .collect();
    let mut entries = Vec::with_capacity(n_nodes - 1);
    let mut total = 0.0;
    for &v in order.iter().rev() {
        if v == 0 {
            continue;
        }
        let p = tree.parent[v];
        net[p] += net[v];
        let (i, j, mass) = if v < nx {
            (v, p - nx, net[v])
        } else {
            (p, v - nx, -net[v])
        };
        if mass > 0.0 {
            total += mass * tree.cost[(i, j)];
            entries.push((i, j, mass));
        }
    }
    entries.sort_by_key(|e| (e.0, e.1));
    Plan {
        entries,
        cost: total,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use faer::Mat;

    #[test]
    fn square_problem_finds_the_optimal_permutation() {
        // Optimal assignment is the anti-diagonal.
        let c = Mat::from_fn(3, 3, |i, j| {
            if i + j == 2 {
                0.0
            } else {
                1.0 + (i * 3 + j) as f64
            }
        });
        let plan = uniform_transport(c.as_ref()).unwrap();
        assert!(plan.cost.abs() < 1e-15);
        assert_eq!(plan.entries.len(), 3);
        for &(i, j, p) in &plan.entries {
            assert_eq!(i + j, 2);
            assert!((p - 1.0 / 3.0).abs() < 1e-15);
        }
    }

    fn pseudo_random_costs(nx: usize, ny: usize, seed: u32) -> Mat<f64> {
        let mut rng = crate::rng::LegacyRandomState::new(seed);
        let v: Vec<f64> = (0..nx * ny).map(|_| rng.next_f64()).collect();
        Mat::from_fn(nx, ny, |i, j| v[i * ny + j])
    }

    /// Minimum of the assignment problem with each source repeated `ry` times and each sink
    /// `rx` times (an independent exact solution of uniform-marginal transport).
    fn expanded_assignment_cost(c: &Mat<f64>, rep_x: usize, rep_y: usize) -> f64 {
        let (nx, ny) = c.shape();
        let n = nx * rep_x;
        assert_eq!(n, ny * rep_y);
        let flat: Vec<f64> = (0..n)
            .flat_map(|i| (0..n).map(move |j| c[(i / rep_x, j / rep_y)]))
            .collect();
        let (rows, cols) = lsap::solve(n, n, &flat, false).unwrap();
        rows.iter()
            .zip(&cols)
            .map(|(&i, &j)| flat[i * n + j])
            .sum::<f64>()
            / n as f64
    }

    #[test]
    fn square_costs_match_exact_assignment() {
        for (n, seed) in [(7, 1), (60, 2), (150, 3)] {
            let c = pseudo_random_costs(n, n, seed);
            let plan = simplex_transport(c.as_ref()).unwrap();
            let want = expanded_assignment_cost(&c, 1, 1);
            assert!(
                (plan.cost - want).abs() < 1e-12,
                "n={n}: {} vs {want}",
                plan.cost
            );
        }
    }

    /// Equal widths are solved as an assignment: the same plan as the simplex's (costs with
    /// a unique optimum), mass 1/n on each of n pairs.
    #[test]
    fn square_problems_take_the_simplex_plan_by_assignment() {
        for (n, seed) in [(1, 7), (2, 8), (7, 1), (60, 2), (150, 3)] {
            let c = pseudo_random_costs(n, n, seed);
            let fast = uniform_transport(c.as_ref()).unwrap();
            let slow = simplex_transport(c.as_ref()).unwrap();
            let pairs = |p: &Plan| {
                let mut v: Vec<(usize, usize)> = p
                    .entries
                    .iter()
                    .filter(|e| e.2 > 0.0)
                    .map(|&(i, j, _)| (i, j))
                    .collect();
                v.sort();
                v
            };
            assert_eq!(pairs(&fast), pairs(&slow), "n={n}");
            assert!((fast.cost - slow.cost).abs() < 1e-12, "n={n}");
            assert!(fast.entries.iter().all(|e| e.2 == 1.0 / n as f64));
        }
    }

    #[test]
    fn rectangular_costs_match_expanded_assignment() {
        // 40 x 25: lcm 200, sources repeated 5 times, sinks 8 times.
        for (nx, ny, seed) in [(40, 25, 4), (12, 18, 5), (9, 3, 6)] {
            let c = pseudo_random_costs(nx, ny, seed);
            let plan = uniform_transport(c.as_ref()).unwrap();
            let l = nx * ny / gcd(nx, ny);
            let want = expanded_assignment_cost(&c, l / nx, l / ny);
            assert!(
                (plan.cost - want).abs() < 1e-12,
                "{nx}x{ny}: {} vs {want}",
                plan.cost
            );
        }
    }

    #[test]
    fn marginals_hold_for_coprime_widths() {
        let c = Mat::from_fn(5, 3, |i, j| ((i * 7 + j * 11) % 13) as f64 / 13.0);
        let plan = uniform_transport(c.as_ref()).unwrap();
        let mut rows = [0.0; 5];
        let mut cols = [0.0; 3];
        for &(i, j, p) in &plan.entries {
            rows[i] += p;
            cols[j] += p;
        }
        rows.iter().for_each(|r| assert!((r - 0.2).abs() < 1e-14));
        cols.iter()
            .for_each(|c| assert!((c - 1.0 / 3.0).abs() < 1e-14));
    }
}
