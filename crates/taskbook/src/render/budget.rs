//! What one rendering may spend: time (a task's `timeout`, else [`DEFAULT_RENDER_TIME`]),
//! memory ([`MAX_RENDER_BYTES`], when the program counts allocations with
//! [`CountingAllocator`]) and stack (macros that call themselves). Tera bounds none of
//! them, and a template is input: `range(end=999999999)` or a loop of 10^8 steps must
//! fail its task, not take the node down with it.
//!
//! The budget of the rendering under way lives in thread-locals, because Tera calls the
//! checks (`guards`) through plain functions that cannot carry it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use crate::error::{Error, Span};
use crate::limits::human_bytes;

/// How long a rendering may run when no task `timeout` bounds it.
pub const DEFAULT_RENDER_TIME: Duration = Duration::from_secs(30);

/// The memory a rendering may allocate on top of what it started with. Templates make
/// files and values; this is far beyond any real one.
pub const MAX_RENDER_BYTES: usize = 256 << 20;

/// The stack a rendering may use below where it started. Only macros that call
/// themselves go deep; threads get 2 MiB of stack (Rust's and Tokio's default), and one
/// more macro body, nested as deep as `guards::MAX_NESTING` allows, must still fit.
const MAX_RENDER_STACK: usize = 512 << 10;

/// How long a rendering may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeLimit {
    /// Each rendering may take [`DEFAULT_RENDER_TIME`].
    Default,
    /// Rendering shares a task's `timeout`: it must be done by `deadline`.
    Task {
        deadline: Instant,
        timeout: Duration,
    },
}

impl TimeLimit {
    /// A task's limit from now on: its `timeout` when it has one.
    pub fn starting_now(timeout: Option<Duration>) -> Self {
        match timeout {
            Some(timeout) => TimeLimit::Task {
                deadline: Instant::now() + timeout,
                timeout,
            },
            None => TimeLimit::Default,
        }
    }

    /// The task's deadline, which its module keeps too.
    pub fn deadline(&self) -> Option<Instant> {
        match self {
            TimeLimit::Default => None,
            TimeLimit::Task { deadline, .. } => Some(*deadline),
        }
    }
}

/// Why a rendering was stopped.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Exceeded {
    Time(TimeLimit),
    Memory,
    Stack,
    /// Blocks and brackets nested deeper than the parser can take safely.
    Nesting {
        depth: usize,
        limit: usize,
    },
    /// `range` asked for `count` numbers (`None`: without end).
    Range {
        call: String,
        count: Option<u64>,
        limit: usize,
    },
    /// A filter given, or about to make, more than one filter may.
    FilterSize {
        filter: String,
        bytes: usize,
        made: bool,
        limit: usize,
    },
}

impl Exceeded {
    /// The user-facing error, where the template is.
    pub(crate) fn into_error(self, span: Span) -> Error {
        let smaller = "a template makes a file or a value, not a data set: loop over fewer items or build smaller strings";
        let (message, hint) = match self {
            Exceeded::Time(TimeLimit::Task { timeout, .. }) => (
                format!(
                    "rendering stopped after {} (the task's `timeout`): a loop or macro runs too long",
                    crate::duration::Duration(timeout)
                ),
                "loop over fewer items, or raise the task's `timeout`".to_string(),
            ),
            Exceeded::Time(TimeLimit::Default) => (
                format!(
                    "rendering stopped after {}, the limit for tasks without a `timeout`: a loop or macro runs too long",
                    crate::duration::Duration(DEFAULT_RENDER_TIME)
                ),
                "loop over fewer items, or give the task a `timeout` to allow more time".to_string(),
            ),
            Exceeded::Memory => (
                format!("rendering used more than {}", human_bytes(MAX_RENDER_BYTES)),
                smaller.to_string(),
            ),
            Exceeded::Stack => (
                "macro calls nest too deeply: rendering stopped before it ran out of stack".to_string(),
                "a macro that calls itself needs a condition that ends the calls".to_string(),
            ),
            Exceeded::Nesting { depth, limit } => (
                format!("the template nests blocks, brackets and operators {depth} deep; at most {limit}"),
                "set inner parts as variables first, or split the template".to_string(),
            ),
            Exceeded::Range { call, count: None, .. } => (
                format!("{call} never ends: `step_by` must be at least 1"),
                "give `step_by` a positive number, or leave it out for 1".to_string(),
            ),
            Exceeded::Range { call, count: Some(count), limit } => (
                format!("{call} asks for {count} numbers; at most {limit}"),
                "`range` makes the whole list before a loop starts: ask for fewer numbers".to_string(),
            ),
            Exceeded::FilterSize { filter, bytes, made, limit } => (
                format!(
                    "`{filter}` {} {bytes} bytes; a filter takes and makes at most {}",
                    if made { "would make" } else { "was given" },
                    human_bytes(limit)
                ),
                smaller.to_string(),
            ),
        };
        Error::new(message).at(span).with_hint(hint)
    }
}

/// How many checks pass between readings of the clock, which cost more than the rest of
/// a check; a check comes at every loop step, macro call and filter, so the clock is
/// still read many times a millisecond in a busy loop.
const CHECKS_PER_CLOCK_READING: u32 = 16;

/// The rendering under way on this thread. `Copy`, in a `Cell`: a check reads it on
/// every loop step and filter, and must cost next to nothing.
#[derive(Clone, Copy)]
struct Active {
    limit: TimeLimit,
    deadline: Instant,
    checks: u32,
    allocated_at_start: isize,
    stack_at_start: usize,
}

thread_local! {
    static ACTIVE: Cell<Option<Active>> = const { Cell::new(None) };
    /// Why the rendering under way must stop, once a check has said so.
    static EXCEEDED: RefCell<Option<Exceeded>> = const { RefCell::new(None) };
    /// Bytes allocated minus bytes freed by this thread, kept by [`CountingAllocator`].
    static NET_ALLOCATED: Cell<isize> = const { Cell::new(0) };
}

/// Ends the budget even when rendering unwinds, so that no later rendering on this
/// thread inherits it.
struct ActiveGuard;

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        ACTIVE.set(None);
    }
}

/// Runs `render` under a budget; returns its result and, if a check stopped it, why.
pub(crate) fn within_budget<T>(
    limit: TimeLimit,
    render: impl FnOnce() -> T,
) -> (T, Option<Exceeded>) {
    let deadline = match limit {
        TimeLimit::Default => Instant::now() + DEFAULT_RENDER_TIME,
        TimeLimit::Task { deadline, .. } => deadline,
    };
    EXCEEDED.take();
    ACTIVE.set(Some(Active {
        limit,
        deadline,
        checks: 0,
        allocated_at_start: NET_ALLOCATED.get(),
        stack_at_start: stack_position(),
    }));
    let guard = ActiveGuard;
    let result = render();
    drop(guard);
    (result, EXCEEDED.take())
}

/// Fails once the rendering under way is out of time, memory or stack.
pub(crate) fn check() -> tera::Result<()> {
    let Some(mut active) = ACTIVE.get() else {
        return Ok(());
    };
    active.checks = active.checks.wrapping_add(1);
    ACTIVE.set(Some(active));
    let exceeded =
        if active.checks % CHECKS_PER_CLOCK_READING == 0 && Instant::now() > active.deadline {
            Exceeded::Time(active.limit)
        } else if NET_ALLOCATED.get().wrapping_sub(active.allocated_at_start)
            > MAX_RENDER_BYTES as isize
        {
            Exceeded::Memory
        } else if active.stack_at_start.saturating_sub(stack_position()) > MAX_RENDER_STACK {
            Exceeded::Stack
        } else {
            return Ok(());
        };
    Err(refuse(exceeded))
}

/// Records why the rendering must stop, and the error that stops it.
pub(crate) fn refuse(exceeded: Exceeded) -> tera::Error {
    let error = tera::Error::msg(exceeded.clone().into_error(Span::default()).message);
    EXCEEDED.with_borrow_mut(|first| {
        first.get_or_insert(exceeded);
    });
    error
}

/// Where this thread's stack is now: it grows down, so deeper calls give lower numbers.
#[inline(never)]
fn stack_position() -> usize {
    let marker = 0u8;
    std::hint::black_box(&marker) as *const u8 as usize
}

/// The system allocator, counting what each thread holds so that a rendering can be
/// stopped once it has allocated [`MAX_RENDER_BYTES`]. A global allocator is chosen
/// once per program, so embedders opt in:
///
/// ```
/// #[global_allocator]
/// static ALLOCATOR: weft_taskbook::render::CountingAllocator =
///     weft_taskbook::render::CountingAllocator;
/// # fn main() {}
/// ```
///
/// The `weft` binary does. Without it, rendering is still bounded in time, in `range`
/// and in what each filter makes, but not in memory overall.
pub struct CountingAllocator;

fn count(bytes: isize) {
    // `try_with`: never panic inside the allocator, not even while a thread ends.
    let _ = NET_ALLOCATED.try_with(|net| net.set(net.get().wrapping_add(bytes)));
}

// SAFETY: every call is passed to `System` unchanged; only a thread-local counter is
// updated besides, which allocates nothing.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is `System.alloc`'s.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            count(layout.size() as isize);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is `System.alloc_zeroed`'s.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            count(layout.size() as isize);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is `System.dealloc`'s.
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract is `System.realloc`'s.
        let new_ptr = unsafe { System.realloc(ptr, layout, new_size) };
        if !new_ptr.is_null() {
            count(new_size as isize - layout.size() as isize);
        }
        new_ptr
    }
}
