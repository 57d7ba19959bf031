// The one place that maps cell names to cells: the engine and the bindings only see Cell<T>.
#include "cell.h"

#include <stdexcept>

#include "gru.h"
#include "lstm.h"
#include "rnn.h"

namespace tbptt {

template <typename T>
std::unique_ptr<Cell<T>> make_cell(const std::string& name) {
    if (name == "lstm") return std::make_unique<Lstm<T>>();
    if (name == "gru") return std::make_unique<Gru<T>>();
    if (name == "rnn_tanh") return std::make_unique<Rnn<T>>(Nonlinearity::tanh);
    if (name == "rnn_relu") return std::make_unique<Rnn<T>>(Nonlinearity::relu);
    return nullptr;
}

std::string unknown_cell_message(const std::string& name) {
    return "cell must be 'lstm', 'gru', 'rnn_tanh' or 'rnn_relu', got '" + name + "'";
}

CellTraits cell_traits(const std::string& name) {
    const std::unique_ptr<Cell<float>> cell = make_cell<float>(name);
    if (!cell) throw std::invalid_argument(unknown_cell_message(name));
    return cell->traits;
}

template std::unique_ptr<Cell<float>> make_cell<float>(const std::string&);
template std::unique_ptr<Cell<double>> make_cell<double>(const std::string&);

}  // namespace tbptt
