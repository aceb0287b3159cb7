//! Building blocks for the parts of the OpenAPI document that are written
//! by hand rather than derived: the JSON a domain type parses from a value
//! (a CloudEvent keeps every attribute it was given) and the query
//! parameters that `domain::query` parses with Altinn's texts. Each such
//! part sits beside the handler that parses it; these helpers keep the
//! builders short and take their bounds from the code that enforces them.
//!
//! Examples are values dev mode knows (`dev/dataset.toml`, and what
//! `.ci/contract-test` creates before it fuzzes), so that a request built
//! from them reaches the service's core rather than a 404.

use utoipa::openapi::path::{ParameterBuilder, ParameterIn, ParameterStyle};
use utoipa::openapi::schema::{
    AllOfBuilder, AnyOfBuilder, ArrayBuilder, KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::{OpenApi, RefOr, Required, Schema};

use crate::domain::query::{MAX_LIST_VALUES, MAX_VALUE_LEN};

/// What the examples name: a person, an organisation, an app's resource
/// and a generic resource of dev mode's dataset.
pub mod dev {
    pub const PARTY: u64 = 1337;
    pub const PERSON: &str = "01039012345";
    pub const APP_RESOURCE: &str = "urn:altinn:resource:app_ttd_apps-test";
    pub const RESOURCE: &str = "urn:altinn:resource:ttd-estate-of-deceased";
}

/// A string without control characters (what the service refuses in the
/// fields it stores: a JSON Schema pattern, ECMA-262 and Python alike).
pub const NO_CONTROL_CHARACTERS: &str = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$";

/// A string.
pub fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

/// A string or `null`.
pub fn nullable_string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type([Type::String, Type::Null].into_iter().collect::<SchemaType>())
}

/// A time with its offset (RFC 3339).
pub fn date_time() -> ObjectBuilder {
    string().format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
}

/// A whole number.
pub fn integer() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::Integer).format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
}

/// An array of `items`.
pub fn array(items: impl Into<RefOr<Schema>>) -> ArrayBuilder {
    ArrayBuilder::new().items(items.into())
}

/// An optional parameter in `place`.
pub fn param(place: ParameterIn, name: &str, schema: impl Into<RefOr<Schema>>, description: &str) -> ParameterBuilder {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(place)
        .required(Required::False)
        .description(Some(description))
        .schema(Some(schema))
}

/// An optional query parameter that repeats (`type=a&type=b`), with the
/// bounds `domain::query` keeps: at most [`MAX_LIST_VALUES`] values of at
/// most [`MAX_VALUE_LEN`] characters.
pub fn repeated(name: &str, description: &str) -> ParameterBuilder {
    let values = array(string().max_length(Some(MAX_VALUE_LEN))).max_items(Some(MAX_LIST_VALUES));
    param(ParameterIn::Query, name, values, description).style(Some(ParameterStyle::Form)).explode(Some(true))
}

/// Adds to the component schema `name` of `doc` the `rules` a value must
/// also meet (JSON Schema's `allOf`): what a derived schema cannot say,
/// such as which members go together. The description and examples stay
/// at the top, where readers and tools look for them.
pub fn add_rules(doc: &mut OpenApi, name: &str, rules: impl IntoIterator<Item = RefOr<Schema>>) {
    let Some(schemas) = doc.components.as_mut().map(|c| &mut c.schemas) else { return };
    let Some(mut schema) = schemas.remove(name) else { return };
    let mut all = AllOfBuilder::new();
    if let RefOr::T(Schema::Object(object)) = &mut schema {
        all = all.description(object.description.take()).examples(std::mem::take(&mut object.examples));
    }
    let all = rules.into_iter().fold(all.item(schema), |all, rule| all.item(rule));
    schemas.insert(name.to_owned(), all.into());
}

/// At least one of these members (`anyOf` of `required`).
pub fn any_of_required(names: &[&str]) -> RefOr<Schema> {
    names.iter().fold(AnyOfBuilder::new(), |any, name| any.item(ObjectBuilder::new().required(*name))).into()
}

/// Exactly one of these members (`oneOf` of `required`).
pub fn one_of_required(names: &[&str]) -> RefOr<Schema> {
    names.iter().fold(OneOfBuilder::new(), |one, name| one.item(ObjectBuilder::new().required(*name))).into()
}
