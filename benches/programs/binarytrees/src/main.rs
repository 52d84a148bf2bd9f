//! Binary trees: allocates many complete binary trees of `Box`ed nodes, walks and frees them,
//! and keeps one long-lived tree throughout. `N` is the largest depth.

struct Node {
    children: Option<(Box<Node>, Box<Node>)>,
}

fn build(depth: u32) -> Box<Node> {
    Box::new(Node {
        children: (depth > 0).then(|| (build(depth - 1), build(depth - 1))),
    })
}

fn check(node: &Node) -> u64 {
    1 + node
        .children
        .as_ref()
        .map_or(0, |(l, r)| check(l) + check(r))
}

fn main() {
    let max_depth: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10)
        .max(6);
    let min_depth = 4;
    let stretch = max_depth + 1;
    println!(
        "stretch tree of depth {stretch}\t check: {}",
        check(&build(stretch))
    );
    let long_lived = build(max_depth);
    let mut depth = min_depth;
    while depth <= max_depth {
        let iterations = 1u64 << (max_depth - depth + min_depth);
        let total: u64 = (0..iterations).map(|_| check(&build(depth))).sum();
        println!("{iterations}\t trees of depth {depth}\t check: {total}");
        depth += 2;
    }
    println!(
        "long lived tree of depth {max_depth}\t check: {}",
        check(&long_lived)
    );
}
