//! The bounds every part of weft agrees on, defined once: what one run may ship (its
//! bundle) and the largest message that carries it or its results. The CLI refuses a
//! run past them before sending anything, the master checks what it forwards, and a
//! node accepts anything within them, so a run can never cost a node its session.

/// The most bytes of files one run ships: enough for templates and small files, not a disk.
pub const MAX_BUNDLE_BYTES: usize = 8 * MIB;
/// The most files one run ships.
pub const MAX_BUNDLE_FILES: usize = 1000;

/// Room beside the bundle in one message: variables, secrets, `nodes[...]`, registered
/// results, paths. A step that needs more is refused by the master before it is sent.
pub const MAX_MESSAGE_OVERHEAD_BYTES: usize = 8 * MIB;

/// The largest message the CLI, a master and a node exchange (a run or a step with its
/// bundle, a task's result); every side encodes and decodes up to exactly this.
pub const MAX_MESSAGE_BYTES: usize = MAX_BUNDLE_BYTES + MAX_MESSAGE_OVERHEAD_BYTES;

/// The most bytes one task's result may carry (its diff, output and message together):
/// a node trims a larger one, so many tasks' results fit in what a master keeps.
pub const MAX_TASK_RESULT_BYTES: usize = 2 * MIB;

/// The most bytes of registered results and set_var values a node hands on at the end
/// of a step (they travel in one message, beside little else): a node fails a step
/// that registered more, and the master ends the session of a node that sends more.
pub const MAX_REGISTERED_BYTES: usize = MAX_MESSAGE_BYTES / 2;

const MIB: usize = 1024 * 1024;

/// `bytes` for people: `20.0 MiB`, `12 KiB`, `300 bytes`.
pub fn human_bytes(bytes: usize) -> String {
    if bytes >= MIB {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    } else if bytes >= 1024 {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_with_a_full_bundle_fits_a_node_message() {
        const { assert!(MAX_MESSAGE_BYTES > MAX_BUNDLE_BYTES + MIB) };
        assert_eq!(human_bytes(20 * MIB), "20.0 MiB");
        assert_eq!(human_bytes(3000), "2 KiB");
        assert_eq!(human_bytes(12), "12 bytes");
    }
}
