//! Layers point one way: no import circle between the files of `src/` (a lower layer talks up
//! through a `Recipient<M>` or plain data, never by naming the higher file). The checker and
//! what it counts as an import: `conclave_common::layers`.

#[test]
fn no_import_circle_between_the_files_of_src() {
    conclave_common::layers::assert_no_import_cycles(
        concat!(env!("CARGO_MANIFEST_DIR"), "/src").as_ref(),
    );
}
