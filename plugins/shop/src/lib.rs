//! A shop agent in the session pattern of voice-agent frameworks: log in,
//! fill a cart, ask for the total. Tools that need a logged-in user declare
//! `requires = ["authenticated"]`, and the host refuses them until
//! `authenticated` is set: the plugin never sees such a call.

use std::collections::BTreeMap;

use agentbox_sdk::{Agent, Outcome, say, tools};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Usernames, passwords and user ids of the shop's customers.
const USERS: [(&str, &str, &str); 2] =
    [("ada", "lovelace", "u-1001"), ("alan", "turing", "u-1002")];

/// What the shop sells.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
enum Product {
    Apple,
    Book,
    Lamp,
}

impl Product {
    const ALL: [Product; 3] = [Product::Apple, Product::Book, Product::Lamp];

    fn price_cents(self) -> u64 {
        match self {
            Product::Apple => 50,
            Product::Book => 1299,
            Product::Lamp => 2499,
        }
    }

    fn description(self) -> &'static str {
        match self {
            Product::Apple => "a crisp apple",
            Product::Book => "a notebook with 200 pages",
            Product::Lamp => "a desk lamp",
        }
    }
}

#[derive(Default, Serialize, Deserialize)]
struct Shop {
    authenticated: Option<bool>,
    user_id: Option<String>,
    cart: BTreeMap<Product, u32>,
}

/// A product and its price.
#[derive(Serialize, JsonSchema)]
struct ProductInfo {
    product_id: Product,
    description: String,
    price_cents: u64,
}

/// One line of the cart.
#[derive(Serialize)]
struct CartLine {
    product_id: Product,
    quantity: u32,
    line_total_cents: u64,
}

/// The cart and what it costs.
#[derive(Serialize)]
struct CartTotal {
    items: Vec<CartLine>,
    total_cents: u64,
}

impl Agent for Shop {
    const NAME: &'static str = "shop";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const DESCRIPTION: &'static str = "A small shop: log in, fill a cart, get the total";

    fn on_message(&mut self, text: &str) -> Result<Outcome, String> {
        let text = text.to_lowercase();
        if text.contains("cart") {
            if self.authenticated != Some(true) {
                say("Please log in first.");
            } else if self.cart.is_empty() {
                say("Your cart is empty.");
            } else {
                let total = self.total();
                for line in &total.items {
                    say(format!(
                        "{} × {:?}: {}",
                        line.quantity,
                        line.product_id,
                        cents(line.line_total_cents)
                    ));
                }
                say(format!("Total: {}", cents(total.total_cents)));
            }
        } else if text.contains("catalog") || text.contains("products") {
            for product in Product::ALL {
                say(format!(
                    "{product:?}: {} for {}",
                    product.description(),
                    cents(product.price_cents())
                ));
            }
        } else {
            say("I can show the catalog or your cart; use the tools to log in and shop.");
        }
        Ok(Outcome::Continue)
    }
}

#[tools]
impl Shop {
    /// Logs a customer in.
    #[tool]
    fn login(
        &mut self,
        /// The customer's username.
        username: String,
        /// The customer's password.
        #[sensitive]
        password: String,
    ) -> Result<BTreeMap<&'static str, String>, String> {
        let (_, _, user_id) = USERS
            .iter()
            .find(|(name, secret, _)| *name == username && *secret == password)
            .ok_or("wrong username or password")?;
        self.authenticated = Some(true);
        self.user_id = Some((*user_id).to_owned());
        Ok(BTreeMap::from([("user_id", (*user_id).to_owned())]))
    }

    /// Logs the customer out and empties the cart.
    #[tool]
    fn logout(&mut self) -> Result<bool, String> {
        let was_logged_in = self.authenticated == Some(true);
        *self = Shop::default();
        Ok(was_logged_in)
    }

    /// Adds a product to the cart.
    #[tool(requires = ["authenticated"])]
    fn add_to_cart(
        &mut self,
        /// The product to add.
        product_id: Product,
        /// How many to add, at least 1.
        #[schemars(range(min = 1, max = 99))]
        quantity: u32,
    ) -> Result<CartLine, String> {
        let in_cart = self.cart.entry(product_id).or_default();
        *in_cart += quantity;
        Ok(CartLine {
            product_id,
            quantity: *in_cart,
            line_total_cents: u64::from(*in_cart) * product_id.price_cents(),
        })
    }

    /// Lists the cart with its total price.
    #[tool(requires = ["authenticated"])]
    fn get_cart_total(&self) -> Result<CartTotal, String> {
        Ok(self.total())
    }

    /// Describes a product and its price. Results are cached for a minute.
    #[tool(cache_ttl_ms = 60000, result_schema)]
    fn get_product(
        /// The product to describe.
        product_id: Product,
    ) -> Result<ProductInfo, String> {
        Ok(ProductInfo {
            product_id,
            description: product_id.description().to_owned(),
            price_cents: product_id.price_cents(),
        })
    }
}

impl Shop {
    fn total(&self) -> CartTotal {
        let items: Vec<CartLine> = self
            .cart
            .iter()
            .map(|(product, quantity)| CartLine {
                product_id: *product,
                quantity: *quantity,
                line_total_cents: u64::from(*quantity) * product.price_cents(),
            })
            .collect();
        let total_cents = items.iter().map(|line| line.line_total_cents).sum();
        CartTotal { items, total_cents }
    }
}

fn cents(amount: u64) -> String {
    format!("${}.{:02}", amount / 100, amount % 100)
}

agentbox_sdk::export_agent!(Shop);
