//! What a GraphQL document may ask for, checked before async-graphql validates it.
//!
//! async-graphql's own checks walk fragment spreads by expanding them, once per spread and
//! without memory: `fragment A on Query { ...B ...B }`, `B` spreading `C` twice, and so on, is a
//! few hundred bytes that expand to 2^30 selections, and its directive check recurses for ever on
//! a fragment that spreads itself. Its validation also runs synchronously inside
//! `Schema::execute`, where no time limit can interrupt it. So before any of that runs, the
//! [`Guard`] extension:
//!
//! 1. scans the text for bracket nesting (the parser is recursive descent: a deep enough nesting
//!    overflows the stack, which aborts the process);
//! 2. parses the document on a blocking thread (at most one per core at a time);
//! 3. measures it with fragments expanded but each fragment measured once ([`Shape`]): fields,
//!    aliases, directives, field depth and nesting, refusing fragment cycles, and introspection
//!    that nests type lists (each level multiplies the answer by the schema's size; complexity
//!    does not see it);
//! 4. refuses what exceeds the [`DocumentLimits`].
//!
//! What passes has a bounded expanded size, so async-graphql's checks and validation over it are
//! bounded too.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest};
use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationType, Selection, SelectionSet};
use async_graphql::{Request, ServerError, ServerResult};
use tokio::sync::Semaphore;

/// The bounds on one document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocumentLimits {
    /// Deepest field nesting, introspection (`__schema`, `__type`) excepted: there at most two
    /// type lists (`fields`, `interfaces`, `possibleTypes`, `inputFields`) may nest on one path,
    /// as graphql-js's MaxIntrospectionDepthRule allows, since each multiplies the answer.
    pub depth: usize,
    /// Highest complexity (async-graphql's: fields, times page sizes for lists). A document whose
    /// fields alone, with fragments expanded, exceed it is refused before validation.
    pub complexity: usize,
    /// Most aliases, with fragments expanded.
    pub aliases: usize,
    /// Most directives, with fragments expanded.
    pub directives: usize,
}

impl DocumentLimits {
    /// Deepest nesting of selection sets, fragment spreads and inline fragments (async-graphql's
    /// "recursive depth"): room for fragments around the deepest fields.
    pub fn nesting(&self) -> usize {
        (2 * self.depth).max(32)
    }

    /// Deepest bracket nesting in the text: the selection nesting plus room for argument values
    /// (objects in lists in arguments).
    pub fn brackets(&self) -> usize {
        self.nesting() + 16
    }
}

/// A document refused by a limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// Brackets nest deeper than the parser is allowed to recurse.
    #[error("the query nests brackets {found} deep; at most {max} are allowed")]
    Brackets {
        /// Nesting found (the scan stops at the first level past the limit).
        found: usize,
        /// The limit.
        max: usize,
    },
    /// Selection sets, fragment spreads and inline fragments nest too deep.
    #[error("the query nests selections and fragments {found} deep; at most {max} are allowed")]
    Nesting {
        /// Nesting found (the walk stops at the first level past the limit).
        found: usize,
        /// The limit.
        max: usize,
    },
    /// Fields nest too deep.
    #[error("the query nests fields {found} deep; at most {max} are allowed")]
    Depth {
        /// Depth found.
        found: u64,
        /// The limit.
        max: usize,
    },
    /// More fields than the complexity limit, with fragments expanded.
    #[error(
        "the query selects {found} fields with its fragments expanded; at most {max} are allowed (the complexity limit)"
    )]
    Fields {
        /// Fields found (saturating).
        found: u64,
        /// The limit.
        max: usize,
    },
    /// Too many aliases.
    #[error("the query uses {found} aliases with its fragments expanded; at most {max} are allowed")]
    Aliases {
        /// Aliases found (saturating).
        found: u64,
        /// The limit.
        max: usize,
    },
    /// Too many directives.
    #[error("the query uses {found} directives with its fragments expanded; at most {max} are allowed")]
    Directives {
        /// Directives found (saturating).
        found: u64,
        /// The limit.
        max: usize,
    },
    /// Introspection that nests type lists, each level multiplying the answer by the number of
    /// types or fields (graphql-js's MaxIntrospectionDepthRule).
    #[error(
        "the introspection query nests {found} of fields, interfaces, possibleTypes and inputFields; at most {max} are allowed"
    )]
    Introspection {
        /// Nesting found.
        found: u64,
        /// The limit.
        max: u64,
    },
    /// A fragment spreads itself, directly or through others.
    #[error("fragment {0} spreads itself (directly or through other fragments)")]
    FragmentCycle(String),
}

impl From<LimitError> for ServerError {
    fn from(e: LimitError) -> Self {
        ServerError::new(e.to_string(), None)
    }
}

/// A document measured with its fragments expanded (counts saturate).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Fields.
    pub fields: u64,
    /// Aliases.
    pub aliases: u64,
    /// Directives (on operations, variables, fields, spreads, inline fragments and fragments).
    pub directives: u64,
    /// Deepest field nesting.
    pub depth: u64,
    /// Deepest nesting of selection sets, spreads and inline fragments.
    pub nesting: usize,
    /// Most introspection list fields that recur through types (`fields`, `interfaces`,
    /// `possibleTypes`, `inputFields`) along one path.
    pub type_lists: u64,
}

impl Shape {
    fn add(&mut self, other: &Shape) {
        self.fields = self.fields.saturating_add(other.fields);
        self.aliases = self.aliases.saturating_add(other.aliases);
        self.directives = self.directives.saturating_add(other.directives);
        self.depth = self.depth.max(other.depth);
        self.nesting = self.nesting.max(other.nesting);
        self.type_lists = self.type_lists.max(other.type_lists);
    }
}

/// Scans `query` for bracket nesting (`{`, `(`, `[`) outside strings and comments, without
/// parsing it.
pub fn check_brackets(query: &str, max: usize) -> Result<(), LimitError> {
    let bytes = query.as_bytes();
    let (mut i, mut level) = (0, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' && bytes[i] != b'\r' {
                    i += 1;
                }
            }
            b'"' if bytes[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < bytes.len() && !bytes[i..].starts_with(b"\"\"\"") {
                    i += if bytes[i..].starts_with(b"\\\"\"\"") { 4 } else { 1 };
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'{' | b'(' | b'[' => {
                level += 1;
                if level > max {
                    return Err(LimitError::Brackets { found: level, max });
                }
            }
            b'}' | b')' | b']' => level = level.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// Measures every operation of `doc` (summed: validation walks them all) with fragments expanded,
/// each fragment walked once. Stops past `max_nesting` levels and at a fragment cycle.
pub fn shape(doc: &ExecutableDocument, max_nesting: usize) -> Result<Shape, LimitError> {
    let mut walker = Walker { doc, max_nesting, fragments: HashMap::new() };
    let mut total = Shape::default();
    for (_, op) in doc.operations.iter() {
        let mut s = walker.set(&op.node.selection_set.node, 0)?;
        let vars = op.node.variable_definitions.iter().map(|v| v.node.directives.len()).sum::<usize>();
        s.directives = s.directives.saturating_add((op.node.directives.len() + vars) as u64);
        total.add(&s);
    }
    Ok(total)
}

/// Measures `doc` and checks it against `limits`.
pub fn check(doc: &ExecutableDocument, limits: &DocumentLimits) -> Result<Shape, LimitError> {
    let s = shape(doc, limits.nesting())?;
    if s.depth > limits.depth as u64 {
        return Err(LimitError::Depth { found: s.depth, max: limits.depth });
    }
    if s.fields > limits.complexity as u64 {
        return Err(LimitError::Fields { found: s.fields, max: limits.complexity });
    }
    if s.aliases > limits.aliases as u64 {
        return Err(LimitError::Aliases { found: s.aliases, max: limits.aliases });
    }
    if s.directives > limits.directives as u64 {
        return Err(LimitError::Directives { found: s.directives, max: limits.directives });
    }
    Ok(s)
}

/// Introspection's root fields.
const INTROSPECTION: [&str; 2] = ["__schema", "__type"];
/// Introspection list fields that lead back to types.
const TYPE_LISTS: [&str; 4] = ["fields", "interfaces", "possibleTypes", "inputFields"];
/// Type lists nested along one introspection path (graphql-js allows 2 as well; the standard
/// introspection query uses 1).
const MAX_TYPE_LISTS: u64 = 2;

struct Walker<'a> {
    doc: &'a ExecutableDocument,
    max_nesting: usize,
    /// Shapes of the fragments walked so far (relative to the fragment's own selection set);
    /// `None` while a fragment is being walked, so meeting it again is a cycle.
    fragments: HashMap<&'a str, Option<Shape>>,
}

impl<'a> Walker<'a> {
    /// The shape of a selection set at nesting `level`; its `nesting` is relative to it.
    fn set(&mut self, set: &'a SelectionSet, level: usize) -> Result<Shape, LimitError> {
        let mut s = Shape::default();
        for selection in &set.items {
            let (inner, directives) = match &selection.node {
                Selection::Field(f) => {
                    let f = &f.node;
                    let mut inner = if f.selection_set.node.items.is_empty() {
                        Shape::default()
                    } else {
                        self.nested(&f.selection_set.node, level)?
                    };
                    let name = f.name.node.as_str();
                    if TYPE_LISTS.contains(&name) {
                        inner.type_lists += 1;
                    }
                    if INTROSPECTION.contains(&name) {
                        if inner.type_lists > MAX_TYPE_LISTS {
                            return Err(LimitError::Introspection { found: inner.type_lists, max: MAX_TYPE_LISTS });
                        }
                        // The schema's own types nest only as deep as they are: `ofType` chains
                        // end, and type lists are bounded above, so depth does not count here.
                        inner.depth = 0;
                        inner.type_lists = 0;
                    }
                    inner.fields = inner.fields.saturating_add(1);
                    inner.aliases = inner.aliases.saturating_add(u64::from(f.alias.is_some()));
                    inner.depth += 1;
                    (inner, f.directives.len())
                }
                Selection::InlineFragment(i) => {
                    (self.nested(&i.node.selection_set.node, level)?, i.node.directives.len())
                }
                Selection::FragmentSpread(spread) => {
                    let name = spread.node.fragment_name.node.as_str();
                    (self.fragment(name, level + 1)?, spread.node.directives.len())
                }
            };
            s.add(&inner);
            s.directives = s.directives.saturating_add(directives as u64);
        }
        Ok(s)
    }

    /// A selection set one level below `level`.
    fn nested(&mut self, set: &'a SelectionSet, level: usize) -> Result<Shape, LimitError> {
        self.enter(level + 1, 0)?;
        let mut s = self.set(set, level + 1)?;
        s.nesting += 1;
        Ok(s)
    }

    /// A fragment spread at `level` (the fragment's selection set is at `level`).
    fn fragment(&mut self, name: &'a str, level: usize) -> Result<Shape, LimitError> {
        match self.fragments.get(name) {
            Some(Some(s)) => {
                self.enter(level, s.nesting)?;
                let mut s = *s;
                s.nesting += 1;
                return Ok(s);
            }
            Some(None) => return Err(LimitError::FragmentCycle(name.to_owned())),
            None => {}
        }
        // An unknown fragment is validation's to report.
        let Some(def) = self.doc.fragments.get(name) else { return Ok(Shape::default()) };
        self.enter(level, 0)?;
        self.fragments.insert(name, None);
        let mut s = self.set(&def.node.selection_set.node, level)?;
        s.directives = s.directives.saturating_add(def.node.directives.len() as u64);
        self.fragments.insert(name, Some(s));
        s.nesting += 1;
        Ok(s)
    }

    fn enter(&self, level: usize, below: usize) -> Result<(), LimitError> {
        let found = level + below;
        if found > self.max_nesting {
            return Err(LimitError::Nesting { found, max: self.max_nesting });
        }
        Ok(())
    }
}

/// Marks a request whose document [`prepare`] already checked (the HTTP and WebSocket paths do it
/// on a blocking thread before they execute).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Prepared;

/// Checks the text, parses it into `request` and checks the document; returns the type of the
/// operation the request runs (None when it names no operation of the document: execution
/// reports that). Blocking work: call it off the async runtime.
pub(crate) fn prepare(request: &mut Request, limits: &DocumentLimits) -> ServerResult<Option<OperationType>> {
    check_brackets(&request.query, limits.brackets())?;
    let name = request.operation_name.clone();
    let doc = request.parsed_query()?;
    check(doc, limits)?;
    let ty = match (&doc.operations, name) {
        (DocumentOperations::Single(op), _) => Some(op.node.ty),
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name.as_str()).map(|op| op.node.ty),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => ops.values().next().map(|op| op.node.ty),
        (DocumentOperations::Multiple(_), None) => None,
    };
    request.data.insert(Prepared);
    Ok(ty)
}

/// Runs [`prepare`] on a blocking thread, at most one per core at a time.
pub(crate) async fn prepare_off_runtime(
    mut request: Request,
    limits: DocumentLimits,
    gate: &Semaphore,
) -> ServerResult<(Request, Option<OperationType>)> {
    let _permit = gate.acquire().await.map_err(|e| ServerError::new(format!("internal error: {e}"), None))?;
    tokio::task::spawn_blocking(move || prepare(&mut request, &limits).map(|ty| (request, ty)))
        .await
        .map_err(|e| ServerError::new(format!("internal error: {e}"), None))?
}

/// The schema extension that applies [`prepare`] to every request that did not go through it yet
/// (subscriptions and queries run on the schema directly), on a blocking thread.
#[derive(Debug, Clone)]
pub struct Guard {
    limits: DocumentLimits,
    gate: Arc<Semaphore>,
}

impl Guard {
    /// A guard for `limits`, parsing at most `parallel` documents at a time.
    pub fn new(limits: DocumentLimits, parallel: usize) -> Guard {
        Guard { limits, gate: Arc::new(Semaphore::new(parallel.max(1))) }
    }

    /// The limits.
    pub fn limits(&self) -> &DocumentLimits {
        &self.limits
    }

    pub(crate) fn gate(&self) -> &Semaphore {
        &self.gate
    }
}

impl ExtensionFactory for Guard {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(self.clone())
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for Guard {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        if request.data.contains_key(&std::any::TypeId::of::<Prepared>()) {
            return next.run(ctx, request).await;
        }
        let (request, _) = prepare_off_runtime(request, self.limits, &self.gate).await?;
        next.run(ctx, request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::parser::parse_query;

    const LIMITS: DocumentLimits = DocumentLimits { depth: 12, complexity: 30_000, aliases: 30, directives: 50 };

    fn measured(q: &str) -> Result<Shape, LimitError> {
        check_brackets(q, LIMITS.brackets())?;
        check(&parse_query(q).unwrap(), &LIMITS)
    }

    #[test]
    fn counts_fields_aliases_directives_and_depth_of_a_plain_query() {
        let s = measured("query Q($a: Int @deprecated) @skip(if: false) { a: x { y @include(if: true) } z }").unwrap();
        assert_eq!((s.fields, s.aliases, s.directives, s.depth, s.nesting), (3, 1, 3, 2, 1));
    }

    #[test]
    fn aliases_in_a_fragment_count_once_per_spread() {
        // A limit that counted a fragment's aliases once would let ten spreads of it ask for ten times
        // as many.
        let aliases: String = (0..10).map(|i| format!("a{i}: x ")).collect();
        let spreads = "...F ".repeat(4);
        let q = format!("{{ {spreads} }} fragment F on Query {{ {aliases} }}");
        assert_eq!(measured(&q), Err(LimitError::Aliases { found: 40, max: 30 }));
    }

    #[test]
    fn an_exponential_fragment_chain_is_measured_in_linear_time_and_refused() {
        let mut q = String::from("{ ...F0 }");
        for i in 0..60 {
            q.push_str(&format!(" fragment F{i} on Query {{ ...F{} ...F{} }}", i + 1, i + 1));
        }
        q.push_str(" fragment F60 on Query { x @skip(if: false) }");
        let start = std::time::Instant::now();
        let err = measured(&q).unwrap_err();
        assert!(matches!(err, LimitError::Nesting { .. }), "{err}");
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        // The same blow-up, wide instead of deep: 8 levels of 30 spreads each.
        let mut q = String::from("{ ...F0 }");
        for i in 0..8 {
            q.push_str(&format!(" fragment F{i} on Query {{ {} }}", format!("...F{} ", i + 1).repeat(30)));
        }
        q.push_str(" fragment F8 on Query { x }");
        assert_eq!(measured(&q), Err(LimitError::Fields { found: 30u64.pow(8), max: 30_000 }));
    }

    #[test]
    fn fragment_cycles_are_refused_before_anything_expands_them() {
        assert_eq!(
            measured("{ ...A } fragment A on Query { x ...B } fragment B on Query { ...A }"),
            Err(LimitError::FragmentCycle("A".into()))
        );
        assert_eq!(measured("{ ...A } fragment A on Query { ...A }"), Err(LimitError::FragmentCycle("A".into())));
    }

    #[test]
    fn directives_are_counted_wherever_they_stand() {
        let q = format!("{{ x {} }}", "@skip(if: false) ".repeat(51));
        assert_eq!(measured(&q), Err(LimitError::Directives { found: 51, max: 50 }));
        let q = format!("{{ ...F ...F }} fragment F on Query @a {{ x {} }}", "@b ".repeat(25));
        assert_eq!(measured(&q), Err(LimitError::Directives { found: 52, max: 50 }));
    }

    #[test]
    fn depth_counts_fields_through_fragments() {
        let q =
            "{ a { ...F } } fragment F on T { b { c { d { e { f { g { h { i { j { k { l { m } } } } } } } } } } } }";
        assert_eq!(measured(q), Err(LimitError::Depth { found: 13, max: 12 }));
        let q = "{ a { ...F } } fragment F on T { b { c { d { e { f { g { h { i { j { k { l } } } } } } } } } } }";
        assert_eq!(measured(q).map(|s| s.depth), Ok(12));
    }

    #[test]
    fn introspection_is_exempt_from_depth_but_may_not_nest_type_lists() {
        let typeref = format!("type {{ {} kind {} }}", "ofType { kind ".repeat(9), "}".repeat(9));
        let standard = format!("{{ __schema {{ types {{ fields {{ args {{ {typeref} }} }} }} }} }}");
        assert!(measured(&standard).is_ok(), "GraphiQL's introspection query is deeper than 12");
        let bomb = "{ __schema { types { fields { type { fields { type { fields { name } } } } } } } }";
        assert_eq!(measured(bomb), Err(LimitError::Introspection { found: 3, max: 2 }));
        // Outside introspection a field named `fields` is the schema's own (job timelines).
        assert!(measured("{ a { fields { b { fields { c { fields { d } } } } } } }").is_ok());
    }

    #[test]
    fn bracket_nesting_is_refused_before_parsing_and_strings_do_not_count() {
        let deep = format!("{}{}", "{a".repeat(100_000), "}".repeat(100_000));
        assert_eq!(check_brackets(&deep, 48), Err(LimitError::Brackets { found: 49, max: 48 }));
        let list = format!("{{ x(a: {}1{}) }}", "[".repeat(60), "]".repeat(60));
        assert!(matches!(check_brackets(&list, 48), Err(LimitError::Brackets { .. })));
        let quoted = format!(
            "{{ x(a: \"{}\", b: \"\"\"{}\\\"\"\"\"\"\") }} # {}",
            "{".repeat(100),
            "[".repeat(100),
            "(".repeat(100)
        );
        assert_eq!(check_brackets(&quoted, 48), Ok(()));
    }

    #[test]
    fn the_selected_operation_type_is_reported() {
        let mut r = Request::new("query A { x } subscription B { y }").operation_name("B");
        assert_eq!(prepare(&mut r, &LIMITS).unwrap(), Some(OperationType::Subscription));
        let mut r = Request::new("query A { x } subscription B { y }");
        assert_eq!(prepare(&mut r, &LIMITS).unwrap(), None);
        let mut r = Request::new("{ x }");
        assert_eq!(prepare(&mut r, &LIMITS).unwrap(), Some(OperationType::Query));
        assert!(r.data.contains_key(&std::any::TypeId::of::<Prepared>()));
    }
}
