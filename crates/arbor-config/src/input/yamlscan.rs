//! A pre-parse guard for YAML: libyaml (under serde_norway) spends time
//! proportional to the flow nesting depth on every token, so a 16 MiB
//! document of nested `[` takes hours, although anything nested deeper
//! than serde's recursion limit (128) fails anyway. This scan measures
//! the deepest flow nesting (`[`, `{`) cheaply so that such a document is
//! refused before libyaml sees it.
//!
//! It follows just enough of YAML to find structural brackets: quoted
//! scalars (which may span lines), comments, block scalars (`|`, `>`),
//! and that in block context a bracket opens a collection only where a
//! value starts (line start, after `- `, `: `, `? `, and after node
//! properties such as `!!seq ` or `&anchor ` there); inside a flow
//! collection every bracket outside quotes is structural.

/// Deepest flow nesting accepted (serde's own limit is 128).
pub const MAX_FLOW_DEPTH: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Quote {
    None,
    Single,
    Double,
}

/// The deepest flow nesting of `text`, or the first depth above `limit`
/// (the scan stops there).
pub fn flow_depth(text: &[u8], limit: usize) -> usize {
    let mut depth = 0usize;
    let mut max = 0usize;
    let mut quote = Quote::None;
    // Indentation of the line that started a block scalar, while in it.
    let mut block_scalar: Option<usize> = None;
    for line in text.split(|&b| b == b'\n') {
        let indent = line.iter().take_while(|&&b| b == b' ').count();
        if let Some(parent) = block_scalar {
            let blank = line.iter().all(|b| b.is_ascii_whitespace());
            if blank || indent > parent {
                continue;
            }
            block_scalar = None;
        }
        // Whether the next non-space byte starts a value (block context).
        let mut value_start = true;
        let mut prev = b' ';
        let mut i = 0;
        while let Some(&c) = line.get(i) {
            i += 1;
            match quote {
                Quote::Single => {
                    if c == b'\'' {
                        if line.get(i) == Some(&b'\'') {
                            i += 1;
                        } else {
                            quote = Quote::None;
                        }
                    }
                    prev = c;
                    continue;
                }
                Quote::Double => {
                    if c == b'\\' {
                        i += 1;
                    } else if c == b'"' {
                        quote = Quote::None;
                    }
                    prev = c;
                    continue;
                }
                Quote::None => {}
            }
            let starts = depth > 0 || value_start;
            match c {
                b'#' if prev == b' ' || prev == b'\t' || i == 1 => break,
                b' ' | b'\t' => {}
                b'\'' if starts || depth > 0 => quote = Quote::Single,
                b'"' if starts || depth > 0 => quote = Quote::Double,
                b'[' | b'{' if starts => {
                    depth += 1;
                    max = max.max(depth);
                    if max > limit {
                        return max;
                    }
                }
                b']' | b'}' if depth > 0 => depth -= 1,
                // Node properties (`!tag`, `&anchor`) precede the value
                // they qualify: a bracket after them still opens a
                // collection.
                b'!' | b'&' if depth == 0 && value_start => {
                    while let Some(&n) = line.get(i) {
                        if matches!(n, b' ' | b'\t' | b'[' | b'{' | b']' | b'}' | b',') {
                            break;
                        }
                        i += 1;
                    }
                    prev = c;
                    continue;
                }
                b'|' | b'>' if depth == 0 && value_start => {
                    block_scalar = Some(indent);
                    break;
                }
                b'-' | b'?' | b':'
                    if depth == 0 && matches!(line.get(i), None | Some(b' ' | b'\t')) =>
                {
                    value_start = true;
                    prev = c;
                    continue;
                }
                _ => {}
            }
            if !matches!(c, b' ' | b'\t') {
                value_start = false;
            }
            prev = c;
        }
    }
    max
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> usize {
        flow_depth(s.as_bytes(), 1000)
    }

    #[test]
    fn measures_flow_nesting_only() {
        assert_eq!(d("a: b\n"), 0);
        assert_eq!(d("a: [1, [2, {b: [3]}]]\n"), 4);
        assert_eq!(d("a:\n  - [x]\n  - {y: z}\n"), 1);
        assert_eq!(d("[\n [\n  [\n  ]\n ]\n]\n"), 3);
        // Brackets inside scalars, comments and block scalars.
        assert_eq!(d("a: b[c[d\n"), 0);
        assert_eq!(d("a: '[[[' # [[[\n"), 0);
        assert_eq!(d("a: \"[\\\"[[\"\n"), 0);
        assert_eq!(d("a: [ '[[', \"]]\" ]\n"), 1);
        assert_eq!(d("a: |\n  [Unit\n  [[[[\n\n  x\nb: [c]\n"), 1);
        assert_eq!(d("contents: >-\n    [[[\nnext: {a: 1}\n"), 1);
        assert_eq!(d("a: 'multi\n  [[[ line'\n"), 0);
        // Node properties keep the value's start.
        assert_eq!(d("a: !!seq [!!seq [x]]\n"), 2);
        assert_eq!(d("a: &x [&y [z]]\n"), 2);
        assert_eq!(d("- !t &a {b: [c]}\n"), 2);
        assert_eq!(d("a: !!seq[x]\n"), 1);
        assert_eq!(d("a: b!c[d\n"), 0);
        assert_eq!(d("--- [[x]]\n"), 2);
        assert_eq!(d("--- !!seq [[x]]\n"), 2);
    }

    #[test]
    fn stops_at_the_limit() {
        let deep = "[".repeat(1_000_000);
        assert_eq!(flow_depth(deep.as_bytes(), 100), 101);
    }
}
