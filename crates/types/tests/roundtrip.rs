//! A blueprint built in code renders to a document that reads back equal.

use baton_test_utils::strategies;
use baton_types::parse_blueprint;
use test_strategy::proptest;

#[proptest(cases = 256)]
fn rendered_documents_read_back_equal(
    #[strategy(strategies::blueprint(6, 12))] bp: baton_types::Blueprint,
) {
    match bp.validate() {
        Ok(()) => {
            let back = parse_blueprint(bp.document()).unwrap();
            proptest::prop_assert_eq!(back, bp);
        }
        Err(invalid) => {
            // Reading finds exactly what checking the model found.
            let err = parse_blueprint(bp.document()).unwrap_err();
            proptest::prop_assert_eq!(err, invalid.into());
        }
    }
}
