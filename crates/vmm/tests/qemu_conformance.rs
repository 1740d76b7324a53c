//! The driver conformance suite (`conformance/`) run on the QEMU driver,
//! opened the way the server opens it.

mod common;
mod conformance;

use std::sync::Arc;

use hearth_vmm::{Vmm, VmmConfig};

fn qemu() -> Arc<dyn Vmm> {
    common::init_tracing();
    hearth_vmm::open(&VmmConfig::default()).expect("open the qemu driver")
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() -> anyhow::Result<()> {
            let _serial = common::serial().await;
            conformance::$name(qemu).await
        }
    )*};
}

conformance!(
    boot_exec_and_identity,
    pause_stops_the_guest_and_resume_continues,
    full_snapshot_restores_disk_memory_and_processes,
    restores_of_one_snapshot_are_independent,
    template_clones_are_independent_and_leave_it_untouched,
    templates_stack_through_shared_memory_restores,
    a_new_driver_instance_adopts_a_running_vm,
    destroy_leaves_nothing,
    pause_to_disk_then_restore_in_place,
    guest_poweroff_shows_as_exited,
    a_guest_that_never_answers_fails_with_its_console,
    a_snapshot_on_a_full_disk_is_no_space_and_the_vm_runs_on,
    inspect_refuses_a_snapshot_with_any_file_cut_short,
    an_oversized_spec_is_refused_before_anything_starts,
    guest_clock_runs_at_host_rate_booted_and_restored,
);
